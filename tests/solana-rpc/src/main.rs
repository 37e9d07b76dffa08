//! `kronos-solana-rpc [--port N] [--wall-clock [--speed S]]`: serves the local Solana RPC (kronos-market loaded
//! natively) on 127.0.0.1 until interrupted; the first line on stdout is its URL. For the demo and for trying the
//! keeper by hand. With `--wall-clock` the bank makes a slot every 400 ms and its Clock follows the wall clock
//! (`--speed S`: S chain seconds per wall second).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use kronos_solana_rpc::{LocalRpc, WallClock};

const USAGE: &str = "usage: kronos-solana-rpc [--port N] [--wall-clock [--speed S]]  (N = 0 or absent: any free port; \
                     --wall-clock: a slot every 400 ms, the Clock following the wall clock S times faster, default 1)";

#[tokio::main]
async fn main() -> ExitCode {
    let mut port = 0u16;
    let (mut wall, mut speed) = (false, 1u32);
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
            "--wall-clock" => wall = true,
            "--speed" => match args.next().map(|s| s.parse::<u32>()) {
                Some(Ok(s)) if s >= 1 => speed = s,
                Some(Ok(_)) => {
                    eprintln!("--speed: must be at least 1\n{USAGE}");
                    return ExitCode::from(2);
                }
                Some(Err(e)) => {
                    eprintln!("--speed: not a whole number: {e}\n{USAGE}");
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!("--speed: missing its value\n{USAGE}");
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
    if speed != 1 && !wall {
        eprintln!("--speed: only with --wall-clock\n{USAGE}");
        return ExitCode::from(2);
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let started = if wall {
        LocalRpc::start_wall_clock(addr, WallClock { speed, ..WallClock::default() }).await
    } else {
        LocalRpc::start_on(addr).await
    };
    let rpc = match started {
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
