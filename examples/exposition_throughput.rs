//! Throughput of our exposition parser on one file, for `bench/textparse/compare.sh`: the same
//! loop as the criterion bench (every sample, every label read and unescaped), timed `RUNS`
//! times on the bytes in memory, best run kept. Prints the line format of the Go side,
//! `<name> samples=<n> sum=<sum of values> best_s=<seconds> mibps=<MiB/s>`, so that the script
//! can check that both read the same samples before comparing speed.
//!
//! Usage: `cargo run --release --example exposition_throughput -- FILE RUNS`

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sovereign_operator::finops::exposition::samples;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, runs] = args.as_slice() else {
        eprintln!("usage: exposition_throughput FILE RUNS");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runs) = runs.parse::<u32>().ok().filter(|n| *n > 0) else {
        eprintln!("RUNS must be a positive integer, not {runs:?}");
        return ExitCode::from(2);
    };
    let mut best = Duration::MAX;
    let (mut count, mut sum) = (0_usize, 0.0_f64);
    for _ in 0..runs {
        let start = Instant::now();
        let (mut n, mut s, mut label_bytes) = (0_usize, 0.0_f64, 0_usize);
        for sample in samples(black_box(&text)) {
            let sample = match sample {
                Ok(sample) => sample,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    return ExitCode::from(1);
                }
            };
            n += 1;
            s += sample.value;
            // Read every label, as the Go side materialises every label set.
            for (name, value) in sample.labels() {
                label_bytes += name.len() + value.len();
            }
        }
        black_box(label_bytes);
        best = best.min(start.elapsed());
        (count, sum) = (n, s);
    }
    let secs = best.as_secs_f64();
    println!(
        "sovereign samples={count} sum={sum} best_s={secs:.6} mibps={:.1}",
        text.len() as f64 / f64::from(1 << 20) / secs
    );
    ExitCode::SUCCESS
}
