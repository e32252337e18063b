// Drives a Hewitt node with the stock @permaweb/aoconnect client, as its users would: an RSA
// JWK made offline by the arweave package, then spawn, message, result, dryrun, results,
// assign and monitor (a cron process), checking every answer's shape against AO.md. Run by tests/tests/aoconnect.rs:
//
//   node aoconnect.mjs <node url> <counter module id> <echo module id>
//
// Exits 0 when everything matched; otherwise prints what did not and exits 1.

import { connect, createDataItemSigner } from "@permaweb/aoconnect";
import Arweave from "arweave";
import assert from "node:assert/strict";

const [url, module, echoModule] = process.argv.slice(2);
if (!url || !module || !echoModule) {
  console.error("usage: node aoconnect.mjs <node url> <counter module id> <echo module id>");
  process.exit(2);
}

const ID = /^[A-Za-z0-9_-]{43}$/;
const RESULT_KEYS = ["Messages", "Spawns", "Assignments", "Output"];

function checkResult(result, output, what) {
  for (const key of RESULT_KEYS) assert.ok(key in result, `${what}: no ${key} in ${JSON.stringify(result)}`);
  assert.ok(Array.isArray(result.Messages) && Array.isArray(result.Spawns) && Array.isArray(result.Assignments), what);
  assert.equal(result.Output, output, `${what}: Output`);
  assert.equal(result.Error, undefined, `${what}: unexpected Error ${result.Error}`);
}

async function main() {
  const jwk = await Arweave.init({}).wallets.generate();
  const signer = createDataItemSigner(jwk);
  const ao = connect({ MODE: "legacy", MU_URL: url, CU_URL: url, GRAPHQL_URL: `${url}/graphql` });
  const scheduler = (await (await fetch(`${url}/`)).json()).address;
  assert.match(scheduler, ID, "GET / gives the scheduler address");

  // spawn: aoconnect first reads the module's tags through GraphQL.
  const pid = await ao.spawn({ module, scheduler, signer, tags: [{ name: "Name", value: "aoconnect-counter" }] });
  assert.match(pid, ID, "spawn returns a process id");

  // message + result, three times: the counter counts.
  const sent = [];
  for (let i = 1; i <= 3; i++) {
    const id = await ao.message({ process: pid, signer, tags: [{ name: "Action", value: "Increment" }], data: `n${i}` });
    assert.match(id, ID, "message returns its id");
    sent.push(id);
    const result = await ao.result({ process: pid, message: id });
    checkResult(result, String(i), `result of message ${i}`);
    assert.equal(typeof result.GasUsed, "number", "GasUsed");
  }

  // dryrun: answers from the current state and changes nothing.
  const dry = await ao.dryrun({ process: pid, tags: [{ name: "Action", value: "Increment" }], data: "" });
  checkResult(dry, "4", "dryrun");
  const fourth = await ao.message({ process: pid, signer, tags: [{ name: "Action", value: "Increment" }] });
  checkResult(await ao.result({ process: pid, message: fourth }), "4", "the message after the dry run");

  // results: the spawn (nonce 0) and four messages, in both orders, paged.
  const ascending = await ao.results({ process: pid, sort: "ASC", limit: 25 });
  assert.deepEqual(ascending.edges.map((e) => e.cursor), ["0", "1", "2", "3", "4"], "results ASC cursors");
  assert.deepEqual(ascending.edges.slice(1).map((e) => e.node.Output), ["1", "2", "3", "4"], "results ASC outputs");
  const descending = await ao.results({ process: pid, sort: "DESC", limit: 2 });
  assert.deepEqual(descending.edges.map((e) => e.cursor), ["4", "3"], "results DESC cursors");
  const next = await ao.results({ process: pid, sort: "DESC", limit: 2, from: "3" });
  assert.deepEqual(next.edges.map((e) => e.cursor), ["2", "1"], "results DESC, next page");

  // The raw shapes behind them (AO.md).
  const page = await (await fetch(`${url}/results/${pid}?sort=ASC&limit=2`)).json();
  assert.equal(page.pageInfo.hasNextPage, true, "pageInfo.hasNextPage");
  assert.equal(page.edges.length, 2);
  const gql = await (
    await fetch(`${url}/graphql`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        query: "query ($ids: [ID!]!) { transactions(ids: $ids) { edges { node { id owner { address } tags { name value } } } } }",
        variables: { ids: [module, pid] },
      }),
    })
  ).json();
  const nodes = gql.data.transactions.edges.map((e) => e.node);
  assert.deepEqual(nodes.map((n) => n.id), [module, pid], "GraphQL finds the module and the process");
  assert.ok(nodes[1].tags.some((t) => t.name === "Name" && t.value === "aoconnect-counter"), "process tags");
  assert.equal(nodes[1].owner.address, await Arweave.init({}).wallets.jwkToAddress(jwk), "process owner is the JWK's address");

  // The scheduler's timeline holds the process and the four messages, signed by the JWK (type 1).
  const timeline = await (await fetch(`${url}/${pid}`)).json();
  assert.equal(timeline.edges.length, 5, "timeline edges");
  assert.deepEqual(timeline.edges.slice(1).map((e) => e.node.message.id), [...sent, fourth], "timeline order");

  // assign: the fourth message joins an echo process's timeline without its Data and Anchor;
  // the echo process answers with the msg it was handed.
  const echo = await ao.spawn({ module: echoModule, scheduler, signer, tags: [{ name: "Name", value: "aoconnect-echo" }] });
  const assignment = await ao.assign({ process: echo, message: fourth, exclude: ["Data", "Anchor"] });
  assert.match(assignment, ID, "assign returns the assignment id");
  const seen = (await ao.result({ process: echo, message: fourth })).Output;
  assert.equal(seen.Id, fourth, "the assigned message's Id");
  assert.equal(seen.Nonce, 1, "its nonce in the echo process's timeline");
  assert.equal(seen.Target, echo, "Target is the process it was assigned to");
  assert.ok(!("Data" in seen) && !("Anchor" in seen), `excluded fields are left out: ${JSON.stringify(seen)}`);
  assert.ok(seen.Tags.some((t) => t.name === "Action" && t.value === "Increment"), "its tags");
  const latest = await (await fetch(`${url}/${echo}/latest`)).json();
  assert.equal(latest.message, null, "the SU shows an assignment without its message");
  assert.equal(latest.assignment.id, assignment, "GET /{pid}/latest is the assignment");
  const assignmentTags = latest.assignment.tags.map((t) => `${t.name}=${t.value}`);
  assert.deepEqual(
    assignmentTags.slice(6),
    ["Data-Protocol=ao", "Type=Assignment", "Variant=ao.TN.1", `Message=${fourth}`, "Exclude=Data", "Exclude=Anchor"],
    "assignment tag order"
  );
  await assert.rejects(ao.assign({ process: echo, message: fourth }), /409/, "assigning twice is refused");

  // monitor: a counter whose cron increments it every second counts on its own once monitored;
  // /cron pages the tick results (the counts 1, 2, 3, ...).
  const cronTags = [
    { name: "Cron-Interval", value: "1-second" },
    { name: "Cron-Tag-Action", value: "Increment" },
  ];
  const ticking = await ao.spawn({ module, scheduler, signer, tags: cronTags });
  await ao.monitor({ process: ticking, signer });
  await new Promise((resolve) => setTimeout(resolve, 2500));
  const counted = await ao.dryrun({ process: ticking, tags: [{ name: "Action", value: "Get" }] });
  assert.ok(Number(counted.Output) >= 2, `the cron counted while monitored: ${counted.Output}`);
  await ao.unmonitor({ process: ticking, signer });
  const cron = await (await fetch(`${url}/cron/${ticking}?limit=100`)).json();
  assert.equal(cron.pageInfo.hasNextPage, false, "one page");
  assert.ok(cron.edges.length >= 2, `cron results: ${JSON.stringify(cron)}`);
  cron.edges.forEach((edge, index) => {
    checkResult(edge.node, String(index + 1), `cron result ${index}`);
    assert.match(edge.cursor, /^\d+,0$/, "cron cursor");
  });

  console.log(`aoconnect: spawn, message, result, dryrun, results, assign, monitor all matched (process ${pid})`);
}

main().catch((error) => {
  console.error(`aoconnect: ${error.stack ?? error}`);
  process.exit(1);
});
