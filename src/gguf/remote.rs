//! Remote GGUF headers over HTTP range requests (feature `remote`).
//!
//! A planner needs the header only — a few MB at the front of a file that
//! may be 200 GB — so [`RangeReader`] fetches `Range: bytes=a-b` chunks on
//! demand and hands them to the same [`read_header`] that reads local files.
//! The first chunk is 2 MiB (enough for most headers; a 151,936-token vocab
//! needs ~7 MB) and each further chunk doubles, up to 16 MiB, so a large
//! header costs a few requests rather than dozens.
//!
//! The total file length comes from the first answer's `Content-Range`
//! (`bytes 0-2097151/20132659200`); it bounds every length field exactly as
//! a local file's size does. A server that ignores `Range` (status 200)
//! is an error rather than a 20 GB download.
//!
//! Split models work by URL as by path: the shard naming
//! (`NAME-00002-of-00005.gguf`) is read from the last path segment, and the
//! siblings' URLs differ only there (a query string such as
//! `?download=true` is kept).

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::shard::{check_split_keys, parse_shard_name, Shard};
use super::{read_header, GgufError, Header, Options};

/// Settings of a remote read.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Limits of the header parser (`file_len` is set from `Content-Range`).
    pub header: Options,
    /// Size of the first range request.
    pub chunk: u64,
    /// Largest range request; chunks double from `chunk` up to this.
    pub max_chunk: u64,
    /// Time limit for one request, connection to last body byte.
    pub timeout: Duration,
    /// Most bytes one file may cost before the read gives up: a header
    /// larger than this is not a model a planner can use (the largest real
    /// ones, 256k-token vocabularies, are ~15 MB), and the cap keeps a
    /// hostile server from streaming gigabytes of "header".
    pub max_fetch: u64,
}

impl Default for RemoteOptions {
    fn default() -> RemoteOptions {
        RemoteOptions {
            header: Options::default(),
            chunk: 2 << 20,
            max_chunk: 16 << 20,
            timeout: Duration::from_secs(30),
            max_fetch: 256 << 20,
        }
    }
}

/// What a remote read cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FetchStats {
    /// HTTP requests made.
    pub requests: u64,
    /// Body bytes received.
    pub bytes_fetched: u64,
}

/// Why one range request failed. Carried inside the `io::Error` that
/// [`RangeReader`]'s `Read` impl returns, and turned into
/// [`GgufError::Remote`] by [`read_url`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    #[error("no answer within {0:?} (timeout)")]
    Timeout(Duration),
    #[error("request for bytes {start}-{end} failed: {message}")]
    Request {
        start: u64,
        end: u64,
        message: String,
    },
    #[error("server answered {status} to a range request for bytes {start}-{end} (expected 206 Partial Content)")]
    Status { status: u16, start: u64, end: u64 },
    #[error("server answered 200 to a range request: it does not support range requests, and the whole file would have to be downloaded")]
    RangeIgnored,
    #[error("the 206 answer for bytes {start}-{end} has no Content-Range header")]
    MissingContentRange { start: u64, end: u64 },
    #[error("bad Content-Range '{value}' in the answer for bytes {start}-{end}")]
    BadContentRange { value: String, start: u64, end: u64 },
    #[error("the server did not say the file length (Content-Range '{0}')")]
    UnknownLength(String),
    #[error("the header is larger than the {limit} bytes a remote read may fetch")]
    TooLarge { limit: u64 },
    #[error("the answer for bytes {start}-{end} has {got} bytes, Content-Range says {expected}")]
    BodyLength {
        start: u64,
        end: u64,
        got: u64,
        expected: u64,
    },
}

/// A `Read`/`BufRead` over a remote file, fetching ranges on demand.
///
/// It only ever moves forward, which is all the header parser does. Every
/// request and every body byte is counted ([`RangeReader::stats`]).
pub struct RangeReader {
    agent: ureq::Agent,
    url: String,
    timeout: Duration,
    buf: Vec<u8>,
    buf_pos: usize,
    /// Absolute offset of the byte after `buf`.
    next: u64,
    file_len: Option<u64>,
    chunk: u64,
    max_chunk: u64,
    max_fetch: u64,
    stats: FetchStats,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeReader")
            .field("url", &self.url)
            .field("next", &self.next)
            .field("file_len", &self.file_len)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl RangeReader {
    pub fn new(url: &str, opts: &RemoteOptions) -> RangeReader {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(opts.timeout))
            // Statuses are ours to judge: 200 to a range request is its own error.
            .http_status_as_error(false)
            .build();
        RangeReader {
            agent: config.into(),
            url: url.to_string(),
            timeout: opts.timeout,
            buf: Vec::new(),
            buf_pos: 0,
            next: 0,
            file_len: None,
            chunk: opts.chunk.max(1),
            max_chunk: opts.max_chunk.max(opts.chunk).max(1),
            max_fetch: opts.max_fetch,
            stats: FetchStats::default(),
        }
    }

    /// The file length, once the first answer arrived.
    pub fn file_len(&self) -> Option<u64> {
        self.file_len
    }

    pub fn stats(&self) -> FetchStats {
        self.stats
    }

    /// Absolute offset of the next byte `read` would return.
    pub fn position(&self) -> u64 {
        self.next - (self.buf.len() - self.buf_pos) as u64
    }

    /// Fetch the next chunk into `buf`; an empty `buf` means end of file.
    fn fetch(&mut self) -> Result<(), RemoteError> {
        self.buf.clear();
        self.buf_pos = 0;
        let start = self.next;
        if start >= self.max_fetch {
            return Err(RemoteError::TooLarge {
                limit: self.max_fetch,
            });
        }
        let mut n = self.chunk.min(self.max_fetch - start);
        if let Some(len) = self.file_len {
            if start >= len {
                return Ok(());
            }
            n = n.min(len - start);
        }
        let end = start + n - 1;
        let request_err = |message: String| RemoteError::Request {
            start,
            end,
            message,
        };
        self.stats.requests += 1;
        let mut resp = self
            .agent
            .get(&self.url)
            .header("Range", format!("bytes={start}-{end}"))
            // Byte offsets must be those of the file, not of a gzip stream.
            .header("Accept-Encoding", "identity")
            .call()
            .map_err(|e| map_ureq(e, self.timeout, &request_err))?;
        let status = resp.status().as_u16();
        let content_range = resp
            .headers()
            .get("content-range")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match status {
            206 => {}
            // Past the end: RFC 9110 says the answer carries `bytes */LEN`.
            416 => {
                if let Some(len) = content_range.as_deref().and_then(total_of) {
                    self.file_len = Some(len);
                }
                return Ok(());
            }
            200 => return Err(RemoteError::RangeIgnored),
            _ => return Err(RemoteError::Status { status, start, end }),
        }
        let value = content_range.ok_or(RemoteError::MissingContentRange { start, end })?;
        let (first, last, total) =
            parse_content_range(&value).ok_or_else(|| RemoteError::BadContentRange {
                value: value.clone(),
                start,
                end,
            })?;
        if first != start || last < first || last > end {
            return Err(RemoteError::BadContentRange { value, start, end });
        }
        let total = total.ok_or_else(|| RemoteError::UnknownLength(value.clone()))?;
        if last >= total {
            return Err(RemoteError::BadContentRange { value, start, end });
        }
        self.file_len = Some(total);
        let expected = last - first + 1;
        // `limit(n)` errors when the body is exactly n bytes long; one more
        // lets an exact body through and still stops a runaway one.
        resp.body_mut()
            .with_config()
            .limit(expected + 1)
            .reader()
            .read_to_end(&mut self.buf)
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => RemoteError::Timeout(self.timeout),
                _ => request_err(format!("reading the body: {e}")),
            })?;
        let got = self.buf.len() as u64;
        self.stats.bytes_fetched += got;
        if got != expected {
            return Err(RemoteError::BodyLength {
                start,
                end,
                got,
                expected,
            });
        }
        self.next = start + got;
        self.chunk = self.chunk.saturating_mul(2).min(self.max_chunk);
        Ok(())
    }
}

fn map_ureq(
    e: ureq::Error,
    timeout: Duration,
    request_err: &dyn Fn(String) -> RemoteError,
) -> RemoteError {
    match e {
        ureq::Error::Timeout(_) => RemoteError::Timeout(timeout),
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
            RemoteError::Timeout(timeout)
        }
        other => request_err(other.to_string()),
    }
}

/// `bytes FIRST-LAST/TOTAL` → `(first, last, Some(total))`; `TOTAL` may be `*`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, total))
}

/// The length in a 416 answer's `bytes */LEN`.
fn total_of(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.strip_prefix("*/")?.trim().parse().ok()
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for RangeReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.buf_pos >= self.buf.len() {
            self.fetch().map_err(io::Error::other)?;
        }
        Ok(&self.buf[self.buf_pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.buf_pos = (self.buf_pos + amt).min(self.buf.len());
    }
}

/// One remote file's header.
#[derive(Clone, Debug)]
pub struct RemoteHeader {
    pub url: String,
    pub header: Header,
    /// Total file length, from `Content-Range`.
    pub file_len: u64,
    pub stats: FetchStats,
}

/// A remote file as a [`Shard`] (its `path` is the URL), so code written for
/// local models — `ModelProfile::from_shards` — takes remote ones unchanged.
impl From<RemoteHeader> for Shard {
    fn from(r: RemoteHeader) -> Shard {
        Shard {
            path: PathBuf::from(r.url),
            header: r.header,
            file_len: r.file_len,
        }
    }
}

/// Turn a reader error into a [`GgufError`] that names the URL: a failed
/// request becomes [`GgufError::Remote`], bad GGUF stays what it is.
fn remote_error(url: &str, e: GgufError) -> GgufError {
    if let GgufError::Io { offset, source } = &e {
        if let Some(re) = source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<RemoteError>())
        {
            return GgufError::Remote {
                url: url.to_string(),
                message: format!("{re} (reading the header at byte {offset})"),
            };
        }
    }
    e
}

/// Read the header of the GGUF file at `url` (http:// or https://) with
/// range requests, checking every length against the length the server
/// reports.
pub fn read_url(url: &str, opts: &RemoteOptions) -> Result<RemoteHeader, GgufError> {
    let mut r = RangeReader::new(url, opts);
    // The first answer tells the file length, which bounds the parse.
    r.fill_buf()
        .map_err(|source| remote_error(url, GgufError::Io { offset: 0, source }))?;
    let file_len = r.file_len().ok_or_else(|| GgufError::Remote {
        url: url.to_string(),
        message: "the server did not report the file length".into(),
    })?;
    let hopts = Options {
        file_len: Some(file_len),
        ..opts.header.clone()
    };
    let header = read_header(&mut r, &hopts).map_err(|e| remote_error(url, e))?;
    Ok(RemoteHeader {
        url: url.to_string(),
        header,
        file_len,
        stats: r.stats(),
    })
}

/// The URLs of every shard of the split model `url` belongs to, in order;
/// `None` when its last path segment does not follow the split naming.
pub fn shard_urls(url: &str) -> Option<Vec<String>> {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let (path, suffix) = url.split_at(cut);
    let (dir, name) = path.rsplit_once('/')?;
    let (prefix, _, count) = parse_shard_name(Path::new(name))?;
    Some(
        (1..=count)
            .map(|i| format!("{dir}/{prefix}-{i:05}-of-{count:05}.gguf{suffix}"))
            .collect(),
    )
}

/// Read a remote model given the URL of any of its files: a single file,
/// or every shard of a split model, in shard order.
pub fn read_model_url(url: &str, opts: &RemoteOptions) -> Result<Vec<RemoteHeader>, GgufError> {
    let urls = match shard_urls(url) {
        Some(u) if u.len() > 1 => u,
        _ => vec![url.to_string()],
    };
    let shards = urls
        .iter()
        .map(|u| read_url(u, opts))
        .collect::<Result<Vec<_>, _>>()?;
    if shards.len() > 1 {
        let views: Vec<(&Path, &Header)> = shards
            .iter()
            .map(|s| (Path::new(s.url.as_str()), &s.header))
            .collect();
        check_split_keys(&views)?;
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 0-2097151/20132659200"),
            Some((0, 2097151, Some(20132659200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes 0-x/2"), None);
        assert_eq!(total_of("bytes */100"), Some(100));
    }

    #[test]
    fn shard_urls_keep_the_query() {
        let u = "https://huggingface.co/org/repo/resolve/main/Q4/M-Q4_K_M-00002-of-00003.gguf?download=true";
        let all = shard_urls(u).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0],
            "https://huggingface.co/org/repo/resolve/main/Q4/M-Q4_K_M-00001-of-00003.gguf?download=true"
        );
        assert_eq!(all[1], u);
        assert_eq!(shard_urls("http://h/model.gguf"), None);
    }
}
