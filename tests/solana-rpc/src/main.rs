//! `kronos-solana-rpc [--port N]`: serves the local Solana RPC (kronos-market loaded natively) on 127.0.0.1 until
//! interrupted; the first line on stdout is its URL. For the demo and for trying the keeper by hand.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use kronos_solana_rpc::LocalRpc;

const USAGE: &str = "usage: kronos-solana-rpc [--port N]  (N = 0 or absent: any free port)";

#[tokio::main]
async fn main() -> ExitCode {
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => match args.next().map(|p| p.parse::<u16>()) {
                Some(Ok(p)) => port = p,
                Some(Err(e)) => {
                    eprintln!("--port: not a port number: {e}\n{USAGE}");
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!("--port: missing its value\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let rpc = match LocalRpc::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
        Ok(rpc) => rpc,
        Err(e) => {
            eprintln!("kronos-solana-rpc: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", rpc.url());
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("kronos-solana-rpc: cannot wait for Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
