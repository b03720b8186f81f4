//! A TCP proxy that adds latency, for benchmarks where `tc netem` is not available:
//! `delay-proxy LISTEN_ADDR UPSTREAM_ADDR ONE_WAY_MS`.
//!
//! Every byte is forwarded `ONE_WAY_MS` after it arrived, in each direction, so a request and
//! its answer see a round trip of twice that; bandwidth is not limited (data in flight is
//! queued, up to 32 MiB per direction). A new connection waits one round trip before it is
//! connected upstream (the handshake a real network would cost). Only std; used by
//! `scripts/bench-s3.sh`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::{Duration, Instant};

const PIECE: usize = 64 << 10;

fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = sync_channel::<(Instant, Vec<u8>)>(512);
    let writer = thread::spawn(move || {
        for (due, piece) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if piece.is_empty() || to.write_all(&piece).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; PIECE];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = tx.send((Instant::now() + delay, Vec::new()));
                break;
            }
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = from.shutdown(Shutdown::Read);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: delay-proxy LISTEN_ADDR UPSTREAM_ADDR ONE_WAY_MS");
        std::process::exit(2);
    }
    let one_way = Duration::from_millis(args[3].parse().unwrap_or(10));
    let listener = match TcpListener::bind(&args[1]) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("delay-proxy: binding {}: {e}", args[1]);
            std::process::exit(1);
        }
    };
    for client in listener.incoming().flatten() {
        let upstream = args[2].clone();
        thread::spawn(move || {
            thread::sleep(one_way * 2);
            let Ok(server) = TcpStream::connect(&upstream) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let up = thread::spawn(move || pipe(client, server, one_way));
            pipe(s2, c2, one_way);
            let _ = up.join();
        });
    }
}
