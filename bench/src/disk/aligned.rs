//! An aligned byte buffer for O_DIRECT, built without unsafe: over-allocate and slice from the
//! first aligned address.
//!
//! Invariant: `as_slice()` starts at an address that is a multiple of `align` and is exactly
//! `len` bytes long; the backing vector is never reallocated, so the address is stable.

/// A `len`-byte buffer aligned to `align`.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer; `align` must be a power of two.
    pub fn new(len: usize, align: usize) -> Self {
        assert!(align.is_power_of_two(), "alignment must be a power of two");
        let raw = vec![0u8; len + align];
        let start = raw.as_ptr().align_offset(align);
        assert!(
            start < align,
            "an aligned start exists within one alignment unit"
        );
        Self { raw, start, len }
    }

    /// Fills the buffer with `byte`.
    pub fn fill_pattern(&mut self, byte: u8) {
        let (start, len) = (self.start, self.len);
        self.raw[start..start + len].fill(byte);
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_sized() {
        for len in [1, 2300, 4096, 8192] {
            let mut b = AlignedBuf::new(len, 4096);
            b.fill_pattern(7);
            assert_eq!(b.as_slice().len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % 4096, 0);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
    }
}
