//! The `kronos-solana-rpc` binary serves the RPC and prints its URL first.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use solana_client::nonblocking::rpc_client::RpcClient;

/// Kills the server when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_and_prints_its_url() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kronos-solana-rpc"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let url = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line.trim().to_string()
    })
    .await
    .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url:?}");
    let client = RpcClient::new(url);
    assert!(client.get_version().await.unwrap().solana_core.starts_with("3."));
    assert!(client.get_latest_blockhash().await.is_ok());
    drop(server);

    let out = Command::new(env!("CARGO_BIN_EXE_kronos-solana-rpc")).arg("--port").arg("x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
}
