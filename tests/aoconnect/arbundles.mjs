// ANS-104 data items checked against the npm arbundles both ways. Run by
// tests/tests/aoconnect.rs:
//
//   node arbundles.mjs sign <dir>      writes items arbundles signed (type 1 RSA-PSS with an
//                                      Arweave JWK, type 2 Ed25519, type 3 Ethereum) into
//                                      <dir>/<name>.bin and their ids into <dir>/<name>.id
//   node arbundles.mjs verify <file>…  verifies items another implementation signed; prints
//                                      "<file> <id> ok" per item, exits 1 if any fails
//   node arbundles.mjs bundle <file>   reads an ANS-104 bundle another implementation wrote,
//                                      verifies every item in it, prints "<id> ok" per item
//
// The items carry tags, a target, an anchor and data, so every optional field is exercised.

import { createData, ArweaveSigner, SolanaSigner, EthereumSigner, DataItem, Bundle } from "@dha-team/arbundles";
import crypto from "node:crypto";
import Arweave from "arweave";
import bs58 from "bs58";
import nacl from "tweetnacl";
import fs from "node:fs";
import path from "node:path";

const [mode, ...args] = process.argv.slice(2);

const TAGS = [
  { name: "Data-Protocol", value: "ao" },
  { name: "Variant", value: "ao.TN.1" },
  { name: "Type", value: "Message" },
  { name: "Action", value: "Increment" },
  { name: "Unicode", value: "naïve — ✓" },
];
const TARGET = "_APITjP-3aQWVQJzg_Qecwdrax9kdQbZWN3_O8x5huE";
const ANCHOR = "00000000000000000000000000000042";

async function sign(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const jwk = await Arweave.init({}).wallets.generate();
  const keypair = nacl.sign.keyPair();
  const signers = {
    rsa: new ArweaveSigner(jwk),
    ed25519: new SolanaSigner(bs58.encode(Buffer.from(keypair.secretKey))),
    ethereum: new EthereumSigner(crypto.randomBytes(32).toString("hex")),
  };
  for (const [name, signer] of Object.entries(signers)) {
    for (const [variant, options, data] of [
      ["full", { tags: TAGS, target: TARGET, anchor: ANCHOR }, "hello from arbundles"],
      ["bare", {}, ""],
    ]) {
      const item = createData(data, signer, options);
      await item.sign(signer);
      if (!(await DataItem.verify(item.getRaw()))) throw new Error(`arbundles rejects its own ${name} item`);
      fs.writeFileSync(path.join(dir, `${name}-${variant}.bin`), item.getRaw());
      fs.writeFileSync(path.join(dir, `${name}-${variant}.id`), item.id);
    }
  }
  console.log(`signed ${Object.keys(signers).length * 2} items into ${dir}`);
}

async function verify(files) {
  let failed = 0;
  for (const file of files) {
    const raw = fs.readFileSync(file);
    let ok = false;
    let id = "-";
    try {
      ok = await DataItem.verify(raw);
      id = new DataItem(raw).id;
    } catch (error) {
      console.log(`${file} error ${error.message}`);
    }
    console.log(`${file} ${id} ${ok ? "ok" : "INVALID"}`);
    if (!ok) failed++;
  }
  process.exit(failed ? 1 : 0);
}

async function bundle(file) {
  const read = new Bundle(fs.readFileSync(file));
  const ok = await read.verify();
  for (const id of read.getIds()) console.log(`${id} ${ok ? "ok" : "INVALID"}`);
  process.exit(ok ? 0 : 1);
}

if (mode === "sign" && args.length === 1) await sign(args[0]);
else if (mode === "bundle" && args.length === 1) await bundle(args[0]);
else if (mode === "verify" && args.length > 0) await verify(args);
else {
  console.error("usage: node arbundles.mjs sign <dir> | verify <file>... | bundle <file>");
  process.exit(2);
}
