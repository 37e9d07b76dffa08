//! The `kronos` binary killed with SIGKILL in the middle of a run and restarted: no checkpoint is missed, no action
//! is confirmed twice, and the key never reaches the logs. Also: bad configuration files give clear errors.

use std::process::Stdio;
use std::time::Duration;

use kronos_testkit::harness::{self as common, start, INTERVAL};

fn kronos() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kronos"));
    c.current_dir(kronos_testkit::repo_root());
    c
}

async fn spawn_keeper(net: &common::Net, cfg: &std::path::Path, log: &std::path::Path) -> tokio::process::Child {
    let f = std::fs::File::create(log).unwrap();
    tokio::process::Command::from({
        let mut c = kronos();
        c.args(["-v", "run", "--config"])
            .arg(cfg)
            .env("KRONOS_TEST_KEY", net.keeper_key())
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(f);
        c
    })
    .spawn()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_and_restart_miss_nothing_and_send_nothing_twice() {
    let net = start(&["base", "polygon"]).await;
    let cfg = net.config_file(&[]);
    let log1 = net.dir.path().join("run1.log");
    let mut child = spawn_keeper(&net, &cfg, &log1).await;
    net.wait_checkpoint(0, 3, 30).await;
    for i in 0..2 {
        for _ in 0..100 {
            if net.checkpoint(i, 3).await.0 > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // SIGKILL: no chance to clean up.
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let killed_at = (net.now(0).await - net.chains[0].genesis()) / INTERVAL;
    // Stay down for three checkpoints.
    net.wait_checkpoint(0, killed_at + 3, 10).await;
    let log2 = net.dir.path().join("run2.log");
    let mut child = spawn_keeper(&net, &cfg, &log2).await;
    let target = killed_at + 6;
    net.wait_checkpoint(0, target, 30).await;
    net.wait_checkpoint(1, target, 30).await;
    for i in 0..2 {
        for _ in 0..200 {
            if net.checkpoint(i, target).await.0 > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;

    let tail = |p: &std::path::Path| {
        let t = std::fs::read_to_string(p).unwrap_or_default();
        t.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    for i in 0..2 {
        for k in 0..=target {
            assert!(
                net.checkpoint(i, k).await.0 > 0,
                "{}: checkpoint {k} missed (killed at {killed_at})\nrun 1:\n{}\nrun 2:\n{}",
                net.chains[i].chain.key,
                tail(&log1),
                tail(&log2)
            );
        }
    }
    let store = kronos_keeper::store::Store::connect(&net.store_url()).await.unwrap();
    for c in ["base", "polygon"] {
        let txs = store.all_txs(c).await.unwrap();
        let mut per = std::collections::BTreeMap::new();
        for t in txs
            .iter()
            .filter(|t| t.status == kronos_keeper::store::TxStatus::Confirmed && t.action.starts_with("execute:"))
        {
            *per.entry(t.action.clone()).or_insert(0) += 1;
        }
        assert!(per.values().all(|n| *n == 1), "{c}: an action confirmed twice: {per:?}");
        // A reverted execute is not an action done twice, but it is allowed only as the race a live feed makes: a
        // proof built while its round was the latest, mined after the next round landed (ProofNotLatest), then
        // proven again and confirmed once. Anything else that failed is a bug.
        for t in txs.iter().filter(|t| t.status == kronos_keeper::store::TxStatus::Failed) {
            assert!(
                t.action.starts_with("execute:") && per.get(&t.action) == Some(&1),
                "{c}: a failed transaction that was not re-proven and confirmed: {t:?}\nall: {txs:?}"
            );
        }
        let failed = txs.iter().filter(|t| t.status == kronos_keeper::store::TxStatus::Failed).count();
        assert!(failed <= 2, "{c}: {failed} reverted executes: more than a feed race explains: {txs:?}");
        assert!(per.len() as u64 >= target, "{c}: only {} checkpoints sent by the keeper", per.len());
    }
    // Issue 13, item 12: rounds are logged (INFO), not only published on /ws.
    let text = std::fs::read_to_string(&log2).unwrap();
    for what in ["round started", "round locked"] {
        assert!(text.contains(what), "no '{what}' in the log");
    }
    // No bettors here: rounds end refunded (one-sided or empty pools).
    assert!(text.contains("round settled") || text.contains("round refunded"), "no settled or refunded round logged");
    let key = net.keeper_key();
    for log in [&log1, &log2] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("starting the keeper"), "{text}");
        assert!(!text.contains(&key) && !text.contains(&key[2..]), "the private key reached the log");
        // Issue 13, item 12: a log file gets no colour codes.
        assert!(!text.contains('\u{1b}'), "ANSI escape codes in a log file");
    }
}

#[test]
fn bad_configuration_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = kronos_testkit::repo_root();
    let cat = root.join("config/chains.toml");
    let good = format!(
        "[keeper]\ncatalogue = \"{}\"\nsigner = {{ env = \"KRONOS_TEST_KEY\" }}\n\n[[chain]]\nname = \"base\"\nrpc = [\"http://127.0.0.1:9\"]\nmarket = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n",
        cat.display()
    );
    let cases = [
        (good.replace("name = \"base\"", "name = \"moon\""), "chain[0].name: 'moon' is not in the catalogue"),
        (good.replace("[\"http://127.0.0.1:9\"]", "[\"localhost\"]"), "chain[0].rpc[0]"),
        (good.replace("0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x123"), "chain[0].market"),
        (good.replace("signer = { env = \"KRONOS_TEST_KEY\" }", ""), "keeper"),
        (good.clone() + "bump_percent = 3\n", "chain[0].bump_percent: 3 is below 10"),
        (good.replace("[keeper]", "[keepr]"), "keepr"),
        ("not = [toml".to_string(), "k.toml: line"),
    ];
    for (text, want) in cases {
        let p = dir.path().join("k.toml");
        std::fs::write(&p, &text).unwrap();
        let out = kronos()
            .args(["run", "--config"])
            .arg(&p)
            .env("KRONOS_TEST_KEY", "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}\n{err}");
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
    // A missing key variable is named; a malformed key is not echoed.
    let p = dir.path().join("k.toml");
    std::fs::write(&p, &good).unwrap();
    let out = kronos().args(["run", "--config"]).arg(&p).env_remove("KRONOS_TEST_KEY").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("environment variable KRONOS_TEST_KEY is not set"));
    let out =
        kronos().args(["run", "--config"]).arg(&p).env("KRONOS_TEST_KEY", "0xnot-a-key-but-a-secret").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not hold a 32-byte hex private key") && !err.contains("not-a-key-but-a-secret"),
        "{err}"
    );
    let out = kronos().args(["run", "--config", "/nonexistent/k.toml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/k.toml"));
}
