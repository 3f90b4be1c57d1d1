//! Reassembly of one capture's image from chunks, as pure logic: contiguity, size bounds and
//! the SHA-256 check. Memory is bounded by the declared size, itself at most `max_image_bytes`.
//!
//! An image that arrives in one chunk (the common case: chunks are up to 256 KiB) is passed on
//! as the very buffer it was decoded into, without a copy; chunks of a larger image are copied
//! into one buffer, so many small chunks cannot each pin a bigger receive buffer.

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::domain::{CaptureMeta, ImageContentType};
use crate::error::Error;

/// A capture whose image is being received.
#[derive(Debug)]
pub struct Upload {
    meta: CaptureMeta,
    content_type: ImageContentType,
    size_bytes: u64,
    sha256: [u8; 32],
    hasher: Sha256,
    data: BytesMut,
}

/// A capture whose image arrived whole and matched its declared digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    pub meta: CaptureMeta,
    pub content_type: ImageContentType,
    pub sha256: [u8; 32],
    pub data: Bytes,
}

/// What one chunk did to an upload.
#[derive(Debug)]
pub enum Progress {
    /// More bytes are expected.
    Partial(Upload),
    Complete(Assembled),
}

impl Upload {
    /// Starts an upload; `size_bytes` must already be validated against the image limit.
    pub fn new(meta: CaptureMeta, content_type: ImageContentType, size_bytes: u64, sha256: [u8; 32]) -> Self {
        Self { meta, content_type, size_bytes, sha256, hasher: Sha256::new(), data: BytesMut::new() }
    }

    pub fn capture_id(&self) -> uuid::Uuid {
        self.meta.id
    }

    pub fn received_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// Appends one chunk; errors end the session.
    pub fn push(
        mut self,
        capture_id: &str,
        offset: u64,
        data: Bytes,
        max_chunk_bytes: u32,
    ) -> Result<Progress, Error> {
        let id = self.meta.id;
        if uuid::Uuid::parse_str(capture_id).ok() != Some(id) {
            return Err(Error::invalid(format!(
                "capture_chunk.capture_id {capture_id:?} does not match the capture in progress {id}"
            )));
        }
        if data.len() as u64 > u64::from(max_chunk_bytes) {
            return Err(Error::exhausted(format!(
                "capture_chunk.data of {} bytes exceeds max_chunk_bytes {max_chunk_bytes}",
                data.len()
            )));
        }
        let expected = self.received_bytes();
        if offset != expected {
            return Err(Error::invalid(format!(
                "capture_chunk.offset {offset} for capture {id} is not contiguous, expected {expected}"
            )));
        }
        if expected + data.len() as u64 > self.size_bytes {
            return Err(Error::invalid(format!(
                "capture_chunk.data for capture {id} runs past the declared image_size_bytes {}",
                self.size_bytes
            )));
        }
        self.hasher.update(&data);
        let data = if expected == 0 && data.len() as u64 == self.size_bytes {
            data // the whole image in one chunk
        } else {
            if self.data.capacity() == 0 {
                self.data.reserve(usize::try_from(self.size_bytes.min(1 << 20)).unwrap_or(0));
            }
            self.data.extend_from_slice(&data);
            if self.received_bytes() < self.size_bytes {
                return Ok(Progress::Partial(self));
            }
            std::mem::take(&mut self.data).freeze()
        };
        let digest: [u8; 32] = self.hasher.finalize().into();
        if digest != self.sha256 {
            return Err(Error::invalid(format!("image sha256 mismatch for capture {id}")));
        }
        Ok(Progress::Complete(Assembled {
            meta: self.meta,
            content_type: self.content_type,
            sha256: digest,
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OccupancyStatus, VehicleClass};
    use crate::error::ErrorKind;
    use chrono::Utc;

    fn meta() -> CaptureMeta {
        CaptureMeta {
            id: uuid::Uuid::now_v7(),
            site_id: "a1-km12".into(),
            lane: 0,
            captured_at: Utc::now(),
            detected_at: None,
            vehicle_class: VehicleClass::Car,
            occupancy_status: OccupancyStatus::Counted,
            occupants: Some(2),
            speed_kmh: None,
            height_m: 1.5,
            width_m: 1.8,
            camera_id: "cam0".into(),
            config_version: 1,
            sections: vec![],
            confidence: None,
            model_version: None,
            test: false,
        }
    }

    fn upload(image: &[u8]) -> Upload {
        let sha: [u8; 32] = Sha256::digest(image).into();
        Upload::new(meta(), ImageContentType::Jpeg, image.len() as u64, sha)
    }

    fn b(data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }

    fn partial(p: Progress) -> Upload {
        match p {
            Progress::Partial(u) => u,
            Progress::Complete(_) => panic!("completed too early"),
        }
    }

    #[test]
    fn contiguous_chunks_complete() {
        let image: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut u = upload(&image);
        let id = u.capture_id().to_string();
        let mut offset = 0;
        for chunk in image.chunks(300) {
            match u.push(&id, offset, b(chunk), 300).unwrap() {
                Progress::Partial(next) => u = next,
                Progress::Complete(a) => {
                    assert_eq!(a.data, image);
                    assert_eq!(offset as usize + chunk.len(), image.len());
                    return;
                }
            }
            offset += chunk.len() as u64;
        }
        panic!("never completed");
    }

    #[test]
    fn an_image_in_one_chunk_is_passed_on_without_a_copy() {
        let image = Bytes::from(vec![9u8; 5000]);
        let u = upload(&image);
        let id = u.capture_id().to_string();
        match u.push(&id, 0, image.clone(), 8192).unwrap() {
            Progress::Complete(a) => {
                assert_eq!(a.data, image);
                assert_eq!(a.data.as_ptr(), image.as_ptr(), "the received buffer itself");
            }
            Progress::Partial(_) => panic!("one chunk holds the whole image"),
        }
    }

    #[test]
    fn gap_is_rejected() {
        let image = vec![7u8; 100];
        let u = upload(&image);
        let id = u.capture_id().to_string();
        let e = u.push(&id, 10, b(&image[..10]), 64).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("not contiguous"), "{e}");
    }

    #[test]
    fn repeat_offset_is_rejected() {
        let image = vec![7u8; 100];
        let u = upload(&image);
        let id = u.capture_id().to_string();
        let u = partial(u.push(&id, 0, b(&image[..10]), 64).unwrap());
        let e = u.push(&id, 0, b(&image[..10]), 64).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn wrong_capture_id_is_rejected() {
        let image = vec![7u8; 100];
        let e = upload(&image).push(&uuid::Uuid::now_v7().to_string(), 0, b(&image[..10]), 64).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("capture_id"), "{e}");
    }

    #[test]
    fn overrun_is_invalid_and_oversize_is_exhausted() {
        let image = vec![1u8; 10];
        let u = upload(&image);
        let id = u.capture_id().to_string();
        let e = u.push(&id, 0, b(&[1u8; 11]), 64).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("past the declared"), "{e}");

        let u = upload(&image);
        let id = u.capture_id().to_string();
        let e = u.push(&id, 0, b(&image), 4).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    }

    #[test]
    fn sha_mismatch_is_rejected() {
        let image = vec![1u8; 10];
        let u = Upload::new(meta(), ImageContentType::Png, 10, [0u8; 32]);
        let id = u.capture_id().to_string();
        let e = u.push(&id, 0, b(&image), 64).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(e.message, format!("image sha256 mismatch for capture {id}"));
    }
}
