//! Splitting a byte stream into lines with a bound on each: a tenant that
//! writes 64 MB without a newline must not make a daemon hold 64 MB. A line
//! longer than the bound is passed on in pieces of the bound's size.

/// The longest line held before it is passed on in pieces.
pub const MAX_LINE: usize = 16 * 1024;

/// Accumulates bytes and hands out complete (or over-long) lines.
#[derive(Debug)]
pub struct Lines {
    pending: Vec<u8>,
    max: usize,
}

impl Default for Lines {
    fn default() -> Self {
        Lines::new(MAX_LINE)
    }
}

impl Lines {
    /// Lines of at most `max` bytes.
    pub fn new(max: usize) -> Lines {
        Lines {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// Adds `data`; calls `line` with each line it completes (without the
    /// newline or a trailing `\r`, invalid UTF-8 replaced).
    pub fn push(&mut self, mut data: &[u8], mut line: impl FnMut(&str)) {
        while !data.is_empty() {
            let room = self.max - self.pending.len();
            let take = data.len().min(room);
            match data[..take].iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    self.emit(&mut line);
                }
                None => {
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() >= self.max {
                        self.emit(&mut line);
                    }
                }
            }
        }
    }

    /// What is left without a newline, as a last line.
    pub fn finish(&mut self, mut line: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            self.emit(&mut line);
        }
    }

    fn emit(&mut self, line: &mut impl FnMut(&str)) {
        let text = String::from_utf8_lossy(&self.pending);
        line(text.trim_end_matches('\r'));
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut l = Lines::new(max);
        for c in chunks {
            l.push(c, |s| out.push(s.to_owned()));
        }
        l.finish(|s| out.push(s.to_owned()));
        out
    }

    #[test]
    fn splits_across_chunks() {
        assert_eq!(
            collect(100, &[b"ab", b"c\nde\r\n", b"\nf"]),
            vec!["abc", "de", "", "f"]
        );
    }

    #[test]
    fn long_lines_come_in_pieces_and_memory_stays_bounded() {
        let mut l = Lines::new(4);
        let mut n = 0;
        let big = vec![b'x'; 1 << 20];
        l.push(&big, |s| {
            assert_eq!(s.len(), 4);
            n += 1;
        });
        assert_eq!(n, (1 << 20) / 4);
        assert!(l.pending.capacity() <= 64);
        assert_eq!(collect(3, &[b"abcdefg\nh"]), vec!["abc", "def", "g", "h"]);
    }
}
