//! The GigE Vision camera (`kind = "gige"`) through Aravis (libaravis-0.8, the `aravis` crate):
//! open by device id (or the first camera found), apply exposure, gain, pixel format and packet
//! size, then stream in continuous mode on a [`ThreadedCamera`] thread.
//!
//! The stream holds [`STREAM_BUFFERS`] buffers; each popped buffer is copied out, converted to
//! RGB (Mono8, RGB8, 8-bit Bayer) and pushed back. Pops wait at most [`POP_TIMEOUT`], so the
//! thread notices a dropped source within that; a camera that stops sending is detected by the
//! acquire component's stall check, which drops this source and so stops the acquisition.
//! Finding a camera without a device id broadcasts a discovery on every interface.

use std::sync::Arc;
use std::time::Duration;

use aravis::prelude::*;
use aravis::{AcquisitionMode, Buffer, BufferStatus, Camera, PixelFormat};

use super::{BayerPattern, FrameSink, ThreadedCamera, debayer_tiles, grey_to_rgb};
use crate::domain::{Frame, FramePayload};

/// Buffers queued on the stream.
pub const STREAM_BUFFERS: usize = 8;
/// Longest wait for one buffer before checking whether the source was dropped.
pub const POP_TIMEOUT: Duration = Duration::from_millis(200);

/// What a GigE camera opens.
#[derive(Debug, Clone, PartialEq)]
pub struct GigeSpec {
    pub camera_id: String,
    pub device_id: Option<String>,
    pub exposure_us: Option<f64>,
    pub gain_db: Option<f64>,
    pub pixel_format: Option<String>,
    pub packet_size: Option<u32>,
}

impl GigeSpec {
    fn describe(&self) -> String {
        match &self.device_id {
            Some(id) => format!("gige camera {id:?}"),
            None => "gige camera (first found)".to_owned(),
        }
    }
}

/// Opens the camera on its own thread; frames follow.
pub fn open(spec: GigeSpec) -> anyhow::Result<ThreadedCamera> {
    let camera_id = spec.camera_id.clone();
    ThreadedCamera::spawn(&camera_id, spec.describe(), move |sink| run(&spec, sink))
}

fn run(spec: &GigeSpec, sink: &FrameSink) -> anyhow::Result<()> {
    let fail = |what: &str, err: aravis::glib::Error| {
        anyhow::anyhow!("camera {}: {} {what}: {}", spec.camera_id, spec.describe(), err.message())
    };
    let camera = Camera::new(spec.device_id.as_deref()).map_err(|e| fail("cannot be opened", e))?;
    match spec.packet_size {
        Some(size) => {
            camera.gv_set_packet_size(size as i32).map_err(|e| fail("refused the packet size", e))?
        }
        None => {
            if let Err(err) = camera.gv_auto_packet_size() {
                tracing::warn!(camera = %spec.camera_id, error = %err.message(), "packet size negotiation failed, keeping the default");
            }
        }
    }
    if let Some(format) = &spec.pixel_format {
        camera.set_pixel_format_from_string(format).map_err(|e| fail("refused the pixel format", e))?;
    }
    if let Some(us) = spec.exposure_us {
        camera.set_exposure_time(us).map_err(|e| fail("refused the exposure", e))?;
    }
    if let Some(db) = spec.gain_db {
        camera.set_gain(db).map_err(|e| fail("refused the gain", e))?;
    }
    camera
        .set_acquisition_mode(AcquisitionMode::Continuous)
        .map_err(|e| fail("refused continuous mode", e))?;
    let payload = camera.payload().map_err(|e| fail("has no payload size", e))? as usize;
    let stream = camera.create_stream().map_err(|e| fail("cannot stream", e))?;
    for _ in 0..STREAM_BUFFERS {
        stream.push_buffer(Buffer::new_allocate(payload));
    }
    camera.start_acquisition().map_err(|e| fail("cannot start acquisition", e))?;
    let name = camera.model_name().map(|m| m.to_string()).unwrap_or_default();
    tracing::info!(camera = %spec.camera_id, model = %name, payload, "gige camera streaming");
    let result = stream_frames(spec, &stream, sink);
    if let Err(err) = camera.stop_acquisition() {
        tracing::debug!(camera = %spec.camera_id, error = %err.message(), "stopping acquisition failed");
    }
    result
}

fn stream_frames(spec: &GigeSpec, stream: &aravis::Stream, sink: &FrameSink) -> anyhow::Result<()> {
    let mut failed_in_a_row = 0u32;
    while !sink.stopped() {
        let Some(buffer) = stream.timeout_pop_buffer(POP_TIMEOUT.as_micros() as u64) else {
            continue;
        };
        let t = chrono::Utc::now();
        let converted = (buffer.status() == BufferStatus::Success).then(|| to_rgb(&buffer));
        stream.push_buffer(buffer);
        match converted {
            Some(Ok(payload)) => {
                failed_in_a_row = 0;
                if !sink.send(Frame { t, payload }) {
                    break;
                }
            }
            Some(Err(err)) => anyhow::bail!("camera {}: {}: {err}", spec.camera_id, spec.describe()),
            // incomplete frames (lost packets) are skipped; a camera sending only those stalls
            None => {
                failed_in_a_row += 1;
                if failed_in_a_row % 100 == 1 {
                    tracing::warn!(camera = %spec.camera_id, failed_in_a_row, "incomplete gige frame skipped");
                }
            }
        }
    }
    Ok(())
}

fn to_rgb(buffer: &Buffer) -> anyhow::Result<FramePayload> {
    let (width, height) = (buffer.image_width().max(0) as usize, buffer.image_height().max(0) as usize);
    let data = buffer.image_data();
    let format = buffer.image_pixel_format();
    anyhow::ensure!(data.len() >= width * height, "short image: {} bytes for {width}x{height}", data.len());
    let pixels = match format {
        PixelFormat::MONO_8 => grey_to_rgb(&data[..width * height]),
        PixelFormat::RGB_8_PACKED => {
            anyhow::ensure!(data.len() >= width * height * 3, "short RGB8 image");
            data[..width * height * 3].to_vec()
        }
        PixelFormat::BAYER_RG_8 => debayer_tiles(&data, width, height, BayerPattern::RG),
        PixelFormat::BAYER_GR_8 => debayer_tiles(&data, width, height, BayerPattern::GR),
        PixelFormat::BAYER_GB_8 => debayer_tiles(&data, width, height, BayerPattern::GB),
        PixelFormat::BAYER_BG_8 => debayer_tiles(&data, width, height, BayerPattern::BG),
        other => anyhow::bail!(
            "unsupported pixel format {other:?}; set pixel_format to Mono8, RGB8Packed or an 8-bit Bayer format"
        ),
    };
    Ok(FramePayload::Rgb { width: width as u32, height: height as u32, pixels: Arc::new(pixels) })
}
