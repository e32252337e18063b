//! A seconds-long smoke of the whole report: every limit probe, the log and restart parts, every
//! scenario through the engine's API and over HTTP, at tiny sizes. It proves the harness still
//! works end to end; the figures themselves mean nothing at these sizes and are not checked
//! beyond being measured.

use std::process::Command;

use serde_json::Value;

/// Runs `hewitt-perf report --smoke` with `args` into a temporary directory; returns it, the
/// report's directory and its report.json.
fn smoke_report(args: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, Value) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_hewitt-perf"))
        .args(["report", "--smoke"])
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .output()
        .expect("hewitt-perf runs");
    assert!(
        run.status.success(),
        "hewitt-perf report --smoke {args:?} failed ({}): {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    (dir, out, report)
}

#[test]
fn report_smoke_runs_every_part_and_scenario() {
    let (_dir, out, report) = smoke_report(&[]);
    for key in ["commit", "cpu", "kernel", "cores", "shards"] {
        assert!(!report[key].is_null(), "report.json lacks {key}");
    }
    let limits = &report["limits"];
    assert!(limits["memcpy_gb_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(limits["o_direct_write_gb_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(limits["fdatasync"].as_array().map(Vec::len), Some(3));
    assert_eq!(limits["wasm"].as_array().map(Vec::len), Some(2));

    // Each size with one log, then with one log per shard when the node runs several.
    let shards = report["shards"].as_u64().expect("shards");
    let runs: Vec<(u64, u64)> = report["log"]
        .as_array()
        .expect("log part")
        .iter()
        .map(|run| {
            assert!(run["records_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{run}");
            let busy = run["executor_busy"].as_f64().expect("executor_busy");
            assert!(busy > 0.0 && busy < 1.5, "{run}");
            (
                run["record_bytes"].as_u64().expect("record_bytes"),
                run["shards"].as_u64().expect("shards"),
            )
        })
        .collect();
    let logs: Vec<u64> = if shards > 1 { vec![1, shards] } else { vec![1] };
    let expected: Vec<(u64, u64)> = [100, 1024, 10 * 1024]
        .into_iter()
        .flat_map(|bytes| logs.iter().map(move |&count| (bytes, count)))
        .collect();
    assert_eq!(runs, expected);

    let scenarios = ["many", "hot", "pingpong", "spawn", "exchange"];
    let engine: Vec<&str> = report["engine"]
        .as_array()
        .expect("engine part")
        .iter()
        .map(|run| {
            assert!(run["messages_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{run}");
            run["scenario"].as_str().expect("scenario")
        })
        .collect();
    assert_eq!(engine, scenarios);
    let http: Vec<&str> = report["http"]
        .as_array()
        .expect("http part")
        .iter()
        .map(|run| {
            assert!(run["peak"]["achieved_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{run}");
            assert_eq!(run["open_loop"].as_array().map(Vec::len), Some(1), "{run}");
            run["scenario"].as_str().expect("scenario")
        })
        .collect();
    assert_eq!(http, scenarios);
    // A ping-pong rally is carried by the messenger: the node assigned more than clients sent.
    let pingpong = &report["engine"][2];
    assert!(pingpong["all_messages_per_s"].as_f64() > pingpong["messages_per_s"].as_f64());

    let restart = &report["restart"];
    assert!(restart["records"].as_u64().unwrap_or(0) > 200, "{restart}");
    assert!(
        restart["replay_messages_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{restart}"
    );

    // Acknowledgement latency of the log alone at 10 % and 50 % of its 1 KiB peak.
    let acks = report["log_ack"].as_array().expect("log_ack");
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert!(
        acks.iter().all(|a| a["latency"]["count"].as_u64().unwrap_or(0) > 0),
        "{acks:?}"
    );
    // Beside the disk's own limit at the same load, timed the same way.
    assert!(
        acks.iter()
            .all(|a| a["raw_open_loop"]["count"].as_u64() == a["latency"]["count"].as_u64()),
        "{acks:?}"
    );

    // The large restart, at smoke size: every record written is read back.
    let big = &report["big_restart"];
    assert_eq!(big["records"].as_u64(), Some(2000 + 1000), "{big}");
    assert_eq!(big["serving_ms_each"].as_array().map(Vec::len), Some(3), "{big}");

    // A restart from a checkpoint spares the replay of every message.
    assert_eq!(
        restart["resumed_messages"].as_u64(),
        restart["records"].as_u64(),
        "{restart}"
    );

    // Rollback on 64 MiB: measured (undone in place where the kernel tracks writes).
    let rollback = &report["rollback"];
    assert_eq!(rollback["memory_bytes"].as_u64(), Some(64 << 20), "{rollback}");
    assert!(
        rollback["full_copy_rollback_us"].as_f64().unwrap_or(0.0) > 0.0,
        "{rollback}"
    );

    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("## Rollback"), "{md}");
    assert!(md.contains("## Limits, measured in this run"), "{md}");
    assert!(md.contains("## Restart with a large log"), "{md}");
    for plot in [
        "latency-vs-load.svg",
        "throughput-vs-load.svg",
        "throughput-vs-shards.svg",
    ] {
        let svg = std::fs::read_to_string(out.join(plot)).expect(plot);
        assert!(svg.starts_with("<svg"), "{plot} is not an SVG");
    }
}

#[test]
fn shard_aware_clients_send_every_item_to_its_owner() {
    let (_dir, out, report) = smoke_report(&[
        "--parts",
        "scaling",
        "--scaling-shards",
        "3",
        "--processes",
        "12",
        "--shard-aware",
    ]);
    let point = &report["scaling"][0];
    assert_eq!(point["shards"], 3, "{point}");
    assert!(point["client_messages_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{point}");
    assert_eq!(point["handed_over_share"].as_f64(), Some(0.0), "{point}");
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("nothing is handed across shards"), "{md}");
}
