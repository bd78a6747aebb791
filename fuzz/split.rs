//! Splits one fuzz input into fields: the input up to the first NUL byte
//! and the rest after it (all of it and nothing when there is none).

/// The field before the first NUL, and what follows that NUL.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}
