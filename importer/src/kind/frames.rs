//! Docker's multiplexed stream (an exec or attach without a TTY): frames of an 8-byte header
//! (stream 1 stdout or 2 stderr, three zero bytes, a big-endian u32 length) and their payload.

use std::io::{self, Read};

/// Most bytes one frame may carry; Docker sends at most 32 KiB.
const MAX_FRAME: u32 = 16 << 20;

pub struct Frames<'a> {
    inner: &'a mut dyn Read,
}

impl<'a> Frames<'a> {
    pub fn new(inner: &'a mut dyn Read) -> Frames<'a> {
        Frames { inner }
    }

    /// The next frame's stream and payload, `None` at a clean end between frames.
    pub fn next_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < head.len() {
            match self.inner.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(cut("a frame header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let stream = head[0];
        if stream > 2 || head[1..4] != [0, 0, 0] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a multiplexed output stream (header {head:02x?})"),
            ));
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an output frame of {len} bytes (at most {MAX_FRAME})"),
            ));
        }
        let mut data = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut data)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => cut("a frame"),
                _ => e,
            })?;
        Ok(Some((stream, data)))
    }
}

fn cut(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the output ended inside {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_or_foreign_stream_is_an_error() {
        let mut cut_head: &[u8] = &[1, 0, 0];
        assert!(Frames::new(&mut cut_head).next_frame().is_err());
        let mut cut_body: &[u8] = &[2, 0, 0, 0, 0, 0, 0, 5, b'a'];
        assert!(Frames::new(&mut cut_body).next_frame().is_err());
        let mut plain: &[u8] = b"hello world\n";
        assert!(Frames::new(&mut plain).next_frame().is_err());
        let mut empty: &[u8] = &[];
        assert!(Frames::new(&mut empty).next_frame().unwrap().is_none());
    }
}
