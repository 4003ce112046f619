//! A tiny loopback HTTP/1.1 server answering `Range` requests from
//! in-memory files, for the remote-header tests.
//!
//! Bounded by construction: it listens on 127.0.0.1 only, stops accepting
//! when dropped or after 60 s, and each connection thread ends when the
//! client closes it or after 10 s without a request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A virtual file: `head` followed by zeros up to `len` bytes (so a "2 GB
/// model" costs only its header in memory).
#[derive(Clone)]
pub struct VFile {
    pub head: Arc<Vec<u8>>,
    pub len: u64,
}

/// How the server misbehaves, to test the client's errors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// 206 with a correct Content-Range.
    Range,
    /// 200 with the whole body (a server without range support). The body
    /// is never sent in full: the client must give up on the status.
    IgnoreRange,
    /// 206 without Content-Range.
    NoContentRange,
    /// Waits this long before answering.
    Slow(Duration),
    /// Answers `/x` with `302 Location: /cdn/x` (as Hugging Face sends a
    /// client to its CDN), and serves `/cdn/x` with ranges.
    Redirect,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub range: Option<(u64, u64)>,
}

pub struct Server {
    pub base: String,
    stop: Arc<AtomicBool>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Server {
    pub fn start(files: HashMap<String, VFile>, mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(files);
        let (stop2, seen2) = (stop.clone(), seen.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (files, seen) = (files.clone(), seen2.clone());
                        thread::spawn(move || {
                            let _ = serve(stream, &files, mode, &seen);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { base, stop, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn serve(
    stream: TcpStream,
    files: &HashMap<String, VFile>,
    mode: Mode,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(()); // client closed the connection
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = parse_range(v);
                }
            }
        }
        seen.lock().unwrap().push(Seen {
            path: path.clone(),
            range,
        });
        if let Mode::Slow(d) = mode {
            thread::sleep(d);
        }
        let mut key = path.split('?').next().unwrap_or("");
        if mode == Mode::Redirect {
            match key.strip_prefix("/cdn") {
                Some(k) => key = k,
                None => {
                    write!(
                        out,
                        "HTTP/1.1 302 Found\r\nlocation: /cdn{path}\r\ncontent-length: 0\r\n\r\n"
                    )?;
                    continue;
                }
            }
        }
        let file = files.get(key);
        let Some(file) = file else {
            out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?;
            continue;
        };
        if mode == Mode::IgnoreRange {
            // Announce the whole file, send a little, hang up.
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                file.len
            )?;
            out.write_all(&file.head[..file.head.len().min(1024)])?;
            return Ok(());
        }
        let (a, b) = range.unwrap_or((0, file.len.saturating_sub(1)));
        if a >= file.len {
            write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\ncontent-range: bytes */{}\r\ncontent-length: 0\r\n\r\n",
                file.len
            )?;
            continue;
        }
        let b = b.min(file.len - 1);
        let mut body = vec![0u8; (b - a + 1) as usize];
        let head_len = file.head.len() as u64;
        if a < head_len {
            let hb = b.min(head_len - 1);
            body[..(hb - a + 1) as usize].copy_from_slice(&file.head[a as usize..=hb as usize]);
        }
        let cr = if mode == Mode::NoContentRange {
            String::new()
        } else {
            format!("content-range: bytes {a}-{b}/{}\r\n", file.len)
        };
        write!(
            out,
            "HTTP/1.1 206 Partial Content\r\n{cr}content-length: {}\r\n\r\n",
            body.len()
        )?;
        out.write_all(&body)?;
    }
}
