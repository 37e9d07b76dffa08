//! `kronos copytrade run|status|stats|ratio|emergency-stop|resume`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use kronos_common::Bus;
use kronos_copytrade::control::{self, ControlCommand};
use kronos_copytrade::{Config, Store, Tuning};

/// Who sends the control commands of this command line (recorded with each).
const BY: &str = "kronos copytrade";

#[derive(Debug, Subcommand)]
pub(crate) enum CopytradeCommand {
    /// Follow the lead account and/or the forecaster (paper unless the config says live and --live is given).
    Run(CopyRunArgs),
    /// Whether trading is on, the ratio in effect and where it comes from, risk state, positions, lead, recent
    /// orders and events, from the store.
    Status(CopyArgs),
    /// Performance: fills, PnL, fees, win rate, return, drawdown.
    Stats(CopyArgs),
    /// Set the ratio at runtime (as the bot's /ratio does; it stays in force over the configured one across
    /// restarts), or go back to copytrade.sizing.ratio with --reset.
    Ratio(RatioArgs),
    /// Cancel every order and close every position now; nothing new until `resume`. Survives restarts.
    EmergencyStop(CopyArgs),
    /// Lift the emergency stop (open lead positions are picked up at their next close or flip).
    Resume(CopyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CopyRunArgs {
    #[command(flatten)]
    pub common: CopyArgs,
    /// Trade real money (also needs mode = "live" in the config and the API keys in the environment).
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RatioArgs {
    #[command(flatten)]
    pub common: CopyArgs,
    /// The new ratio (follower size = lead size × ratio), above 0 and at most 100.
    #[arg(conflicts_with = "reset", required_unless_present = "reset")]
    pub value: Option<String>,
    /// Drop the runtime ratio: copytrade.sizing.ratio applies again.
    #[arg(long)]
    pub reset: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// Copy-trader configuration (TOML); see config/copytrade.example.toml.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub(crate) fn run(c: CopytradeCommand) -> Result<()> {
    match c {
        CopytradeCommand::Run(a) => run_daemon(a),
        CopytradeCommand::Status(a) => status(a),
        CopytradeCommand::Stats(a) => stats(a),
        CopytradeCommand::Ratio(a) => ratio(a),
        CopytradeCommand::EmergencyStop(a) => set_emergency(a, true),
        CopytradeCommand::Resume(a) => set_emergency(a, false),
    }
}

fn run_daemon(a: CopyRunArgs) -> Result<()> {
    let cfg = Config::load(&a.common.config)?;
    runtime()?.block_on(async move {
        let (engine, handles) = kronos_copytrade::run::build(&cfg, a.live, Bus::default(), Tuning::default()).await?;
        let (addr, _api) = kronos_copytrade::run::serve_with(handles.clone(), &cfg.listen, cfg.api.clone()).await?;
        tracing::info!(
            mode = if a.live { "LIVE" } else { "paper" },
            network = cfg.network_name(),
            api = %addr,
            "copy-trader starting (/health, /metrics, /api/status, /api/stats)"
        );
        engine.run(crate::cmd::keeper::shutdown_signal()).await
    })
}

fn status(a: CopyArgs) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    runtime()?.block_on(async move {
        let store = Store::connect(&cfg.store).await?;
        let s = kronos_copytrade::report::stored_status(&store).await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            println!(
                "copy-trader ({} mode in {}, {})",
                if cfg.mode == kronos_copytrade::Mode::Live { "live" } else { "paper" },
                cfg.file,
                cfg.network_name()
            );
            print!(
                "{}",
                kronos_copytrade::report::render_status(
                    &s,
                    cfg.sizing.ratio,
                    &cfg.file,
                    kronos_common::time::now_ms() as i64
                )
            );
        }
        Ok(())
    })
}

fn stats(a: CopyArgs) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    runtime()?.block_on(async move {
        let store = Store::connect(&cfg.store).await?;
        let s = kronos_copytrade::report::stats(&store, 0).await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print!("{}", kronos_copytrade::report::render_stats(&s));
        }
        Ok(())
    })
}

fn ratio(a: RatioArgs) -> Result<()> {
    let cfg = Config::load(&a.common.config)?;
    let value = match &a.value {
        Some(v) => Some(kronos_copytrade::report::valid_ratio(v).ok_or_else(|| {
            anyhow::anyhow!(
                "ratio: '{v}' is not a number from {} to {} (e.g. 0.5; smaller ratios round every position to \
                         zero)",
                kronos_copytrade::report::MIN_RATIO,
                kronos_copytrade::report::MAX_RATIO
            )
        })?),
        None => None,
    };
    runtime()?.block_on(async move {
        let store = Store::connect(&cfg.store).await?;
        match value {
            Some(r) => {
                let cmd = ControlCommand::SetRatio { ratio: Some(r), set_by: "kronos copytrade ratio".into() };
                control::append(&store, &cmd, BY).await?;
                store.event("ratio_requested", "", &format!("{} from the command line", r.normalized())).await?;
                println!(
                    "ratio {} recorded: a running copy-trader resizes within a second; it stays in force over \
                     copytrade.sizing.ratio = {} until `kronos copytrade ratio --reset`",
                    r.normalized(),
                    cfg.sizing.ratio
                );
            }
            None => {
                let cmd = ControlCommand::SetRatio { ratio: None, set_by: "kronos copytrade ratio --reset".into() };
                control::append(&store, &cmd, BY).await?;
                store.event("ratio_requested", "", "reset to the configured ratio from the command line").await?;
                println!("ratio reset: copytrade.sizing.ratio = {} from {} applies", cfg.sizing.ratio, cfg.file);
            }
        }
        Ok(())
    })
}

fn set_emergency(a: CopyArgs, on: bool) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    // A stop that cannot be recorded says what is down and what to do instead (nothing else reaches the copy-trader).
    let not_recorded = |e: anyhow::Error| {
        if on {
            control::stop_not_recorded(e)
        } else {
            e.context("the resume was NOT recorded: the copy-trader's store cannot be written")
        }
    };
    runtime()?.block_on(async move {
        let store = Store::connect(&cfg.store).await.map_err(not_recorded)?;
        // Only shapes the message: the command is sent whatever this read says.
        let was_active = control::load(&store).await.map(|s| s.emergency_asked()).unwrap_or(false);
        let cmd = if on {
            ControlCommand::EmergencyStop { reason: "emergency stop requested from the command line".into() }
        } else {
            ControlCommand::Resume
        };
        // Its sequence number: the copy-trader's report of what it did names it.
        let seq = control::append(&store, &cmd, BY).await.map_err(not_recorded)?;
        // Recorded: an event that cannot be written next to it is no reason to say otherwise.
        let kind = if on { "emergency_requested" } else { "resume_requested" };
        if let Err(e) = store.event(kind, "", "from the command line").await {
            eprintln!("warning: the {kind} event could not be written ({e:#}); the command itself is recorded");
        }
        if !on {
            println!(
                "emergency stop lifted in the store: a running copy-trader resumes within a second (open lead \
                 positions are followed from their next close or flip)"
            );
            return Ok(());
        }
        if was_active {
            // Sent again while it holds: the copy-trader makes another pass and reports it.
            println!("the emergency stop was already active; asked again: another pass closes whatever is open");
        }
        let wait = std::time::Duration::from_secs(10);
        use kronos_copytrade::report::EmergencyOutcome;
        match kronos_copytrade::report::emergency_outcome(&store, seq, wait).await {
            EmergencyOutcome::Done => {
                println!("emergency stop carried out: the copy-trader reports no position open; nothing new is traded until `kronos copytrade resume`")
            }
            EmergencyOutcome::Incomplete(d) => println!(
                "emergency stop under way but NOT complete: {d}; the copy-trader keeps trying (`kronos copytrade \
                 status` shows what is open)"
            ),
            EmergencyOutcome::NoAnswer => println!(
                "emergency stop recorded, but no copy-trader reported acting on it within {} s: it may not be \
                 running, and nothing is known to be closed. It is carried out when the copy-trader runs (the \
                 command holds across restarts); until then positions stay open: close them at the exchange if it cannot be \
                 started",
                wait.as_secs()
            ),
        }
        Ok(())
    })
}
