//! A body buffer: the chunks a filter holds or is shown, kept as a list of shared chunks so
//! that passing data through costs no copy and buffering a large body is not quadratic.

use bytes::{Bytes, BytesMut};

use crate::types::{HostResult, Status};

/// Body bytes as a sequence of chunks. The first chunk is kept inline: a body of one chunk
/// (the common case when data streams through) costs no allocation.
#[derive(Debug, Clone, Default)]
pub struct Body {
    head: Option<Bytes>,
    tail: Vec<Bytes>,
    len: usize,
}

impl Body {
    pub fn from_bytes(data: Bytes) -> Body {
        let len = data.len();
        Body {
            head: (len > 0).then_some(data),
            tail: Vec::new(),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn chunks(&self) -> impl Iterator<Item = &Bytes> {
        self.head.iter().chain(self.tail.iter())
    }

    /// Adds a chunk at the end (no copy).
    pub fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if self.head.is_none() {
            self.head = Some(data);
        } else {
            self.tail.push(data);
        }
    }

    /// Moves every chunk of `other` to the end of this body (no copy).
    pub fn append(&mut self, other: Body) {
        if let Some(head) = other.head {
            self.push(head);
        }
        for chunk in other.tail {
            self.push(chunk);
        }
    }

    /// The whole body as one `Bytes`: free for zero or one chunk, one copy otherwise.
    pub fn into_bytes(self) -> Bytes {
        match (self.head, self.tail.is_empty()) {
            (None, _) => Bytes::new(),
            (Some(head), true) => head,
            (Some(head), false) => {
                let mut out = BytesMut::with_capacity(self.len);
                out.extend_from_slice(&head);
                for c in self.tail {
                    out.extend_from_slice(&c);
                }
                out.freeze()
            }
        }
    }

    /// Copies `dst.len()` bytes starting at `start` into `dst`. The range must be in bounds.
    pub fn copy_to(&self, mut start: usize, dst: &mut [u8]) {
        let mut written = 0;
        for c in self.chunks() {
            if written == dst.len() {
                break;
            }
            if start >= c.len() {
                start -= c.len();
                continue;
            }
            let n = (c.len() - start).min(dst.len() - written);
            dst[written..written + n].copy_from_slice(&c[start..start + n]);
            written += n;
            start = 0;
        }
    }

    /// `proxy_set_buffer_bytes` with Envoy's three accepted forms: prepend (start=0,size=0),
    /// replace everything (start=0, size>=len) and append (start>=len). Anything else, or a
    /// result over `max_len`, is BadArgument and changes nothing.
    pub fn set(&mut self, start: usize, size: usize, data: &[u8], max_len: usize) -> HostResult {
        let new_len = if start == 0 && size == 0 {
            self.len + data.len()
        } else if start == 0 && size >= self.len {
            data.len()
        } else if start >= self.len {
            self.len + data.len()
        } else {
            return Err(Status::BadArgument);
        };
        if new_len > max_len {
            return Err(Status::BadArgument);
        }
        let data = Bytes::copy_from_slice(data);
        if start == 0 && size == 0 {
            let old = std::mem::take(self);
            self.push(data);
            self.append(old);
        } else if start == 0 && size >= self.len {
            *self = Body::from_bytes(data);
        } else {
            self.push(data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static str]) -> Body {
        let mut b = Body::default();
        for p in parts {
            b.push(Bytes::from_static(p.as_bytes()));
        }
        b
    }

    #[test]
    fn copy_to_spans_chunks() {
        let b = body(&["abc", "", "defg", "h"]);
        assert_eq!(b.len(), 8);
        let mut dst = [0u8; 5];
        b.copy_to(2, &mut dst);
        assert_eq!(&dst, b"cdefg");
        let mut all = [0u8; 8];
        b.copy_to(0, &mut all);
        assert_eq!(&all, b"abcdefgh");
    }

    #[test]
    fn into_bytes_does_not_copy_a_single_chunk() {
        let data = Bytes::from_static(b"one");
        let b = Body::from_bytes(data.clone());
        assert_eq!(b.into_bytes().as_ptr(), data.as_ptr());
        assert_eq!(body(&["a", "b"]).into_bytes(), "ab");
        assert_eq!(Body::default().into_bytes(), "");
    }

    #[test]
    fn set_accepts_envoys_three_forms_only() {
        let mut b = body(&["middle"]);
        b.set(0, 0, b"pre-", 100).unwrap();
        b.set(10, 0, b"-post", 100).unwrap();
        assert_eq!(b.clone().into_bytes(), "pre-middle-post");
        assert_eq!(b.set(3, 2, b"x", 100), Err(Status::BadArgument));
        b.set(0, 100, b"new", 100).unwrap();
        assert_eq!(b.clone().into_bytes(), "new");
        assert_eq!(
            b.set(0, 3, &[0; 101], 100),
            Err(Status::BadArgument),
            "over the cap"
        );
        assert_eq!(b.into_bytes(), "new", "a refused set changes nothing");
    }
}
