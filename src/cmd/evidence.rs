//! `streamml-sensor evidence ...`: evidence tools (`recover`). `recover` exits 0 when every
//! ring was read, 1 when some ring was unreadable and the others were recovered (one
//! warning line each), 2 when nothing could be recovered (see `evidence::recover`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::evidence::file::TsRes;
use crate::evidence::recover::{exit_code, recover, summary, warnings, RecoverOptions};
use crate::evidence::statedir;

/// `streamml-sensor evidence ...`
#[derive(Args, Debug)]
pub struct EvidenceArgs {
    #[command(subcommand)]
    pub cmd: EvidenceCmd,
}

#[derive(Subcommand, Debug)]
pub enum EvidenceCmd {
    /// Dump the packets the shard rings still hold (no running sensor needed) to a
    /// .pcap.zst, in time order across shards; damaged records (corrupt, torn) are
    /// skipped and counted, never written. Each ring is read on its own: one that cannot
    /// be read is named on stderr with the reason and skipped. Exit 0: every ring read;
    /// 1: some ring unreadable, the others recovered; 2: nothing readable (no output).
    Recover(RecoverArgs),
}

#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// State directory (default: as the sensor resolves it).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Only packets at or after this time: RFC 3339 (2024-01-02T03:04:05Z) or epoch seconds.
    #[arg(long, value_name = "T", value_parser = time_arg)]
    pub since: Option<u64>,
    /// Only packets at or before this time: RFC 3339 or epoch seconds.
    #[arg(long, value_name = "T", value_parser = time_arg)]
    pub until: Option<u64>,
    /// Only packets matching this tcpdump (libpcap) filter expression.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Write microsecond instead of nanosecond PCAP.
    #[arg(long)]
    pub micro: bool,
    /// Output file (.pcap.zst); written to a temporary name and renamed when complete.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

fn time_arg(s: &str) -> Result<u64, String> {
    crate::evidence::time::parse_time(s)
}

/// `streamml-sensor evidence recover ...`.
pub fn run(args: EvidenceArgs) -> anyhow::Result<ExitCode> {
    match args.cmd {
        EvidenceCmd::Recover(a) => {
            let dir = statedir::resolve(a.state_dir.as_deref())?;
            let opts = RecoverOptions {
                state_dir: dir,
                since_ns: a.since,
                until_ns: a.until,
                filter: a.filter,
                ts_res: if a.micro { TsRes::Micro } else { TsRes::Nano },
                output: a.output,
            };
            let rep = recover(&opts)?;
            for w in warnings(&rep) {
                eprintln!("{w}");
            }
            eprintln!("{}", summary(&rep));
            Ok(ExitCode::from(exit_code(&rep)))
        }
    }
}
