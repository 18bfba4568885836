//! `meridian-load ADDR HOST RATE SECONDS [CONNECTIONS]`: GET / with `Host:
//! HOST` to `ADDR` at RATE requests a second in all, spread evenly over
//! CONNECTIONS keep-alive HTTP/1.1 connections (64 by default), for
//! SECONDS; prints the rate achieved and latency percentiles.
//!
//! Each connection sends on a schedule. A request whose turn came while the
//! connection still waited for the last answer is measured from its turn,
//! not from when it could be sent: the wait is latency a client with that
//! schedule would see (wrk2's correction for coordinated omission). Any
//! other request is measured from when it was sent, so the generator's own
//! timer (1 ms ticks) does not count as the server's latency.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: String,
    host: String,
    rate: f64,
    duration: Duration,
    connections: usize,
}

fn args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.len() < 4 {
        return Err("usage: meridian-load ADDR HOST RATE SECONDS [CONNECTIONS]".into());
    }
    let number = |i: usize, what: &str| -> Result<f64, String> {
        argv[i]
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n > 0.0)
            .ok_or_else(|| format!("{what} must be a positive number, not {:?}", argv[i]))
    };
    let connections = match argv.get(4) {
        Some(_) => number(4, "CONNECTIONS")? as usize,
        None => 64,
    };
    Ok(Args {
        addr: argv[0].clone(),
        host: argv[1].clone(),
        rate: number(2, "RATE")?,
        duration: Duration::from_secs_f64(number(3, "SECONDS")?),
        connections: connections.max(1),
    })
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
}

/// Reads one response off `stream` (headers, then a Content-Length body):
/// its status, or `None` when the connection failed or spoke nonsense.
async fn response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<u16> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).ok()?;
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            let total = end + 4 + length;
            while buffer.len() < total {
                read_more(stream, buffer).await?;
            }
            buffer.drain(..total);
            return Some(status);
        }
        read_more(stream, buffer).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await.ok()?;
    (n > 0).then(|| buffer.extend_from_slice(&chunk[..n]))
}

/// One connection's schedule: a request every `interval` from `first`
/// until `end`.
async fn connection(
    addr: String,
    request: Vec<u8>,
    first: Instant,
    interval: Duration,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut stream = None;
    let mut buffer = Vec::new();
    let mut turn = first;
    // When the last answer came: after this request's turn, it waited on the server.
    let mut last_answer = first;
    while turn < end {
        tokio::time::sleep_until(turn.into()).await;
        let from = if last_answer > turn {
            turn
        } else {
            Instant::now()
        };
        if stream.is_none() {
            stream = TcpStream::connect(&addr).await.ok();
            if let Some(s) = &stream {
                let _ = s.set_nodelay(true);
            }
            buffer.clear();
        }
        let answered = match stream.as_mut() {
            Some(s) => match s.write_all(&request).await {
                Ok(()) => response(s, &mut buffer).await,
                Err(_) => None,
            },
            None => None,
        };
        last_answer = Instant::now();
        match answered {
            Some(200) => tally.latencies_us.push(from.elapsed().as_micros() as u64),
            Some(_) => tally.errors += 1,
            None => {
                tally.errors += 1;
                stream = None;
            }
        }
        turn += interval;
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[index] as f64 / 1000.0
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("meridian-load: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("meridian-load: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", args.host).into_bytes();
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + args.duration;
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| {
                // Connection i's turns are offset so the load is even, not in bursts.
                let first = start + interval.mul_f64(i as f64 / args.connections as f64);
                tokio::spawn(connection(
                    args.addr.clone(),
                    request.clone(),
                    first,
                    interval,
                    end,
                ))
            })
            .collect();
        let mut tallies = Vec::new();
        for task in tasks {
            tallies.push(task.await.unwrap_or_default());
        }
        tallies
    });
    let mut latencies: Vec<u64> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    println!(
        "requests {} rate {:.0} p50_ms {:.3} p99_ms {:.3} max_ms {:.3} errors {}",
        latencies.len(),
        latencies.len() as f64 / args.duration.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        errors
    );
    std::process::ExitCode::SUCCESS
}
