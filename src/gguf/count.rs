//! Counting the bytes a read touches.
//!
//! Issue #2 asks that reading one shard of a split model touch only header
//! bytes. [`CountingReader`] makes that measurable: put it *under* a
//! `BufReader` to count the bytes pulled from the file (I/O), or *over* any
//! `BufRead` to count the bytes the parser consumed.

use std::io::{self, BufRead, Read};

/// A reader that counts the bytes delivered through it.
///
/// As a [`Read`] it counts the bytes each `read` returns; as a [`BufRead`]
/// (when the inner reader is one) it counts `consume`d bytes as well, so the
/// count is always "bytes handed to the caller", never bytes merely buffered.
#[derive(Debug)]
pub struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R) -> CountingReader<R> {
        CountingReader { inner, count: 0 }
    }

    /// Bytes delivered so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.count += amt as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reads_and_consumes() {
        let data = [7u8; 100];
        let mut r = CountingReader::new(&data[..]);
        let mut four = [0u8; 4];
        r.read_exact(&mut four).unwrap();
        assert_eq!(r.count(), 4);
        let avail = r.fill_buf().unwrap().len();
        assert_eq!(avail, 96);
        assert_eq!(r.count(), 4, "buffered bytes are not delivered bytes");
        r.consume(10);
        assert_eq!(r.count(), 14);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!((rest.len(), r.count()), (86, 100));
    }
}
