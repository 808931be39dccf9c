//! dmvx-netdelay: a TCP relay that adds a fixed one-way delay in each
//! direction. Test hosts use `tc netem` for delay; on kernels built without
//! netem (CONFIG_NET_SCH_NETEM), this relay between a variant and its leader
//! stands in for it.
//!
//! Usage: dmvx-netdelay LISTEN_ADDR TARGET_ADDR DELAY_MICROSECONDS

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut writer = to.try_clone().expect("clone socket");
    let sender = std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = writer.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = sender.join();
    let _ = to.flush();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: dmvx-netdelay LISTEN_ADDR TARGET_ADDR DELAY_MICROSECONDS");
        std::process::exit(2);
    }
    let delay = Duration::from_micros(args[3].parse().expect("delay in microseconds"));
    let listener = TcpListener::bind(&args[1]).unwrap_or_else(|e| panic!("bind {}: {e}", args[1]));
    println!("relaying {} -> {} with {delay:?} each way", args[1], args[2]);
    for conn in listener.incoming().flatten() {
        let target = args[2].clone();
        std::thread::spawn(move || {
            let Ok(up) = TcpStream::connect(&target) else { return };
            let _ = up.set_nodelay(true);
            let _ = conn.set_nodelay(true);
            let (a, b) = (conn.try_clone().expect("clone"), up.try_clone().expect("clone"));
            let t = std::thread::spawn(move || pump(a, b, delay));
            pump(up, conn, delay);
            let _ = t.join();
        });
    }
}
