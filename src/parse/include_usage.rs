//! Placeholder; replaced by the parser work.
#[derive(Default)]
pub struct UsageChunkStripper {
    _private: (),
}
pub fn inject_include_usage(_body: &[u8]) -> Option<Vec<u8>> {
    None
}
impl UsageChunkStripper {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        chunk.to_vec()
    }
    pub fn finish(&mut self) -> Vec<u8> {
        Vec::new()
    }
}
