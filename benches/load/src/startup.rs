//! `keygate-bench startup`: how long `keygate serve` takes from spawn until it serves
//! (store opened, index built, listeners up: the ready file written) on a data dir,
//! and its resident memory then. Repeated; the median is reported.

use std::path::PathBuf;

use crate::error::{Context, Result, fail};
use crate::report::median;
use crate::spawn::{self, TempDir};

#[derive(clap::Args, Debug)]
pub struct StartupArgs {
    /// A data dir filled by `keygate-bench populate`.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub keygate_bin: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Where to write startup.md.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
}

pub fn run(args: &StartupArgs) -> Result<()> {
    if !args.data_dir.join("db").exists() {
        return fail(format!(
            "{} holds no store: fill it with `keygate-bench populate`",
            args.data_dir.display()
        ));
    }
    let bin = spawn::keygate_bin(args.keygate_bin.as_deref())?;
    let work = TempDir::new("startup")?;
    let mut secs = Vec::new();
    let mut rss = Vec::new();
    let mut lines = Vec::new();
    for rep in 1..=args.repeat {
        let s = spawn::keygate(
            &bin,
            &args.data_dir,
            "startup-token-0123456789",
            work.path(),
            &[],
        )?;
        let t = s.startup.as_secs_f64();
        let (now_kib, peak_kib) = s.memory_kib().ctx("read /proc/<pid>/status")?;
        println!(
            "run {rep}: serving after {t:.3} s; RSS {:.0} MiB (peak {:.0} MiB)",
            now_kib as f64 / 1024.0,
            peak_kib as f64 / 1024.0
        );
        lines.push(format!(
            "| {rep} | {t:.3} | {:.0} | {:.0} |",
            now_kib as f64 / 1024.0,
            peak_kib as f64 / 1024.0
        ));
        secs.push(t);
        rss.push(now_kib as f64 / 1024.0);
        s.stop();
    }
    let (ms, mr) = (median(secs).unwrap_or(0.0), median(rss).unwrap_or(0.0));
    println!("median: serving after {ms:.3} s, RSS {mr:.0} MiB");
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir).ctx("create the report dir")?;
        let md = format!(
            "# keygate-bench: start-up on {}\n\nmedian {ms:.3} s to serving, RSS {mr:.0} MiB\n\n| run | seconds to serving | RSS MiB | peak RSS MiB |\n|---|---|---|---|\n{}\n",
            args.data_dir.display(),
            lines.join("\n")
        );
        std::fs::write(dir.join("startup.md"), md).ctx("write startup.md")?;
    }
    Ok(())
}
