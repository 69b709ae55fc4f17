//! A bounds-checked view of a packet's bytes, the one accessor every read goes
//! through.

/// Largest offset the parser ever reads at. The verifier needs a known upper
/// bound on a variable offset before it is added to a packet pointer; headers
/// further in than this count as truncated.
pub const MAX_OFFSET: usize = 1024;

pub struct Packet {
    /// First readable byte.
    start: usize,
    /// One past the last readable byte (the linear area on TC).
    end: usize,
    /// The frame's true length (on TC it can exceed the readable area); length
    /// fields in headers are checked against this.
    len: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(start: usize, end: usize, len: usize) -> Self {
        // `end` goes through black_box so LLVM cannot relate it to `len` (on XDP
        // they are the same number) and drop a read's bounds check as
        // redundant: the verifier only trusts a check against the packet end
        // made right before the access.
        Self {
            start,
            end: core::hint::black_box(end),
            len,
        }
    }

    /// The frame's length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Reads a `T` at byte `off`, or `None` if any of it lies past the readable end.
    #[inline(always)]
    pub fn read<T: Copy>(&self, off: usize) -> Option<T> {
        // Keep this check first and separate: it bounds `off` for the verifier.
        if off > MAX_OFFSET {
            return None;
        }
        let at = self.start + off;
        if at + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: [at, at + size_of::<T>()) lies inside the packet (checked
        // above); `T: Copy` is plain bytes here; packet data has no alignment.
        Some(unsafe { (at as *const T).read_unaligned() })
    }

    /// Reads a big-endian `u16` at byte `off`.
    #[inline(always)]
    pub fn be16(&self, off: usize) -> Option<u16> {
        self.read::<[u8; 2]>(off).map(u16::from_be_bytes)
    }
}
