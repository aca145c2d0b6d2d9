//! Throughput of the parse path alone (no file I/O), on one core:
//! `cargo bench -p logd --bench parse`. Generates ~200 MB of typical CRI
//! lines (80-300 bytes) in memory and parses them in 256 KiB windows, as the
//! reader hands them over. Prints MB/s and lines/s of input per workload.

use std::hint::black_box;
use std::time::Instant;

use logd::parse::LineParser;
use logd::timestamp::Stamp;

const TOTAL: usize = 200 * 1024 * 1024;
const WINDOW: usize = 256 * 1024;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy)]
enum Workload {
    /// CRI `F` lines with canonical UTC `Z` timestamps: the fast path.
    Z,
    /// The same with `+02:00` offsets: converted to UTC.
    Offset,
    /// 80% Z, 10% offset, 10% split into `P` parts.
    Mixed,
}

fn generate(workload: Workload) -> (Vec<u8>, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words = [
        "GET",
        "/api/v1/items",
        "200",
        "latency_ms=12",
        "user=alice",
        "msg=\"request done\"",
        "trace=4bf92f3577b34da6",
        "ok",
    ];
    let mut data = Vec::with_capacity(TOTAL + 512);
    let mut lines = 0;
    let mut n: u64 = 0;
    while data.len() < TOTAL {
        n += 1;
        let target = 80 + rng.below(221) as usize; // whole line 80..=300 bytes
        let (secs, nanos) = (n / 1000 % 86_400, n % 1_000_000_000);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let kind = match workload {
            Workload::Z => 0,
            Workload::Offset => 1,
            Workload::Mixed => match rng.below(10) {
                0 => 1,
                1 => 2,
                _ => 0,
            },
        };
        let ts = if kind == 1 {
            format!(
                "2024-11-18T{:02}:{m:02}:{s:02}.{nanos:09}+02:00",
                (h + 2) % 24
            )
        } else {
            format!("2024-11-18T{h:02}:{m:02}:{s:02}.{nanos:09}Z")
        };
        let stream = if rng.below(5) == 0 {
            "stderr"
        } else {
            "stdout"
        };
        let mut content = String::new();
        let room = target.saturating_sub(ts.len() + 10);
        while content.len() < room {
            content.push_str(words[rng.below(words.len() as u64) as usize]);
            content.push(' ');
        }
        content.truncate(room);
        if kind == 2 && content.len() > 20 {
            let (a, b) = content.split_at(content.len() / 2);
            data.extend_from_slice(
                format!("{ts} {stream} P {a}\n{ts} {stream} F {b}\n").as_bytes(),
            );
        } else {
            data.extend_from_slice(format!("{ts} {stream} F {content}\n").as_bytes());
        }
        lines += 1;
    }
    (data, lines)
}

fn run(name: &str, workload: Workload) {
    let (data, lines) = generate(workload);
    let now = Stamp::now();
    let mut out = Vec::with_capacity(2 * WINDOW);
    let mut best = f64::MAX;
    let mut produced = 0;
    for _ in 0..3 {
        let mut parser = LineParser::new(30_710, 0);
        produced = 0;
        let start = Instant::now();
        let mut pos = 0;
        while pos < data.len() {
            let end = (pos + WINDOW).min(data.len());
            let r = parser.parse(&data[pos..end], pos as u64, usize::MAX, &now, &mut out);
            produced += r.lines;
            pos += r.consumed;
            black_box(&out);
            out.clear();
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    assert_eq!(produced, lines, "{name}: every logical line is produced");
    println!(
        "{name:<8} {:>7.0} MB/s  {:>6.2} M lines/s  ({} MB, {lines} lines, best of 3: {:.3} s)",
        data.len() as f64 / best / 1e6,
        lines as f64 / best / 1e6,
        data.len() / 1_000_000,
        best
    );
}

fn main() {
    run("Z", Workload::Z);
    run("offset", Workload::Offset);
    run("mixed", Workload::Mixed);
}
