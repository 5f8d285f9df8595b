//! The runner's wire format: a length-prefixed header of `KEY=VALUE` lines,
//! and typed response frames.

use std::io::{Read, Write};

/// Largest header accepted.
const MAX_HEADER: usize = 1 << 20;

pub const KIND_STDOUT: u8 = 1;
pub const KIND_EXIT: u8 = 2;
pub const KIND_FAILED: u8 = 3;

/// One response frame.
#[derive(Debug)]
pub enum Frame<'a> {
    Stdout(&'a [u8]),
    Exit(i32),
    Failed(&'a str),
}

/// Reads the request header: `u32` length, then `KEY=VALUE` lines. `None`
/// when the connection closes before its first byte (bismuthd's readiness
/// probe connects and hangs up).
pub fn read_header(r: &mut impl Read) -> std::io::Result<Option<Vec<(String, String)>>> {
    let mut len = [0u8; 4];
    let first = loop {
        match r.read(&mut len[..1]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if first == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..])?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "request header too large",
        ));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    let text = String::from_utf8_lossy(&data);
    Ok(Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    ))
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, frame: Frame<'_>) -> std::io::Result<()> {
    let exit;
    let (kind, data): (u8, &[u8]) = match frame {
        Frame::Stdout(d) => (KIND_STDOUT, d),
        Frame::Exit(code) => {
            exit = code.to_be_bytes();
            (KIND_EXIT, &exit)
        }
        Frame::Failed(msg) => (KIND_FAILED, msg.as_bytes()),
    };
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&(data.len() as u32).to_be_bytes());
    w.write_all(&head)?;
    w.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let text = b"BISMUTH_TIMEOUT_MS=500\nREQUEST_METHOD=POST\nbad line\n";
        let mut msg = (text.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(text);
        let header = read_header(&mut msg.as_slice()).unwrap().unwrap();
        assert_eq!(
            header,
            vec![
                ("BISMUTH_TIMEOUT_MS".into(), "500".into()),
                ("REQUEST_METHOD".into(), "POST".into())
            ]
        );
    }

    #[test]
    fn frames_are_length_prefixed() {
        let mut out = Vec::new();
        write_frame(&mut out, Frame::Stdout(b"hi")).unwrap();
        write_frame(&mut out, Frame::Exit(-9)).unwrap();
        assert_eq!(&out[..7], &[1, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(&out[7..12], &[2, 0, 0, 0, 4]);
        assert_eq!(i32::from_be_bytes(out[12..16].try_into().unwrap()), -9);
    }

    #[test]
    fn a_connection_closed_at_once_is_a_probe_and_a_cut_header_an_error() {
        assert!(read_header(&mut [0u8; 0].as_slice()).unwrap().is_none());
        assert!(read_header(&mut [0u8, 0].as_slice()).is_err());
    }

    #[test]
    fn oversized_headers_are_refused() {
        let msg = (u32::MAX).to_be_bytes();
        assert!(read_header(&mut msg.as_slice()).is_err());
    }
}
