//! Anonymization: every face region, the detected box scaled about its centre, is blurred,
//! pixelated or filled in place (OpenCV), before the frame is encoded. Masks are rectangles
//! (a superset of deface's ellipses: nothing of the scaled box survives).

use lanewatch_agent_config::AnonymizeMethod;
use opencv::core::{Mat, Rect, Scalar, Size};
use opencv::prelude::*;

use super::VisionError;
use super::model::Face;

/// The mask of `face`: its box scaled by `scale` about the centre, clipped to the frame.
/// `None` when nothing of it lies inside.
pub fn mask_rect(face: &Face, scale: f32, width: i32, height: i32) -> Option<Rect> {
    let [cx, cy] = face.centre();
    let (hw, hh) = ((face.x1 - face.x0) * scale / 2.0, (face.y1 - face.y0) * scale / 2.0);
    let x0 = ((cx - hw).floor() as i32).clamp(0, width);
    let y0 = ((cy - hh).floor() as i32).clamp(0, height);
    let x1 = ((cx + hw).ceil() as i32).clamp(0, width);
    let y1 = ((cy + hh).ceil() as i32).clamp(0, height);
    (x1 > x0 && y1 > y0).then(|| Rect::new(x0, y0, x1 - x0, y1 - y0))
}

/// Masks every face of `faces` in `frame` (BGR, in place); returns the rectangles masked.
pub fn anonymize(
    frame: &mut Mat,
    faces: &[Face],
    method: AnonymizeMethod,
    scale: f32,
) -> Result<Vec<Rect>, VisionError> {
    let (w, h) = (frame.cols(), frame.rows());
    let cv = |err: opencv::Error| VisionError::Frame(format!("anonymize: {err}"));
    let mut done = Vec::new();
    for face in faces {
        let Some(rect) = mask_rect(face, scale, w, h) else { continue };
        let mut roi = Mat::roi_mut(frame, rect).map_err(cv)?;
        match method {
            AnonymizeMethod::Fill => {
                roi.set_to(&Scalar::all(0.0), &opencv::core::no_array()).map_err(cv)?;
            }
            AnonymizeMethod::Blur => {
                // a kernel as large as the face leaves no feature; twice for a smooth result
                let k = (rect.width.max(rect.height) / 2) * 2 + 1;
                let src = roi.try_clone().map_err(cv)?;
                let mut tmp = Mat::default();
                opencv::imgproc::blur_def(&src, &mut tmp, Size::new(k, k)).map_err(cv)?;
                let mut out = Mat::default();
                opencv::imgproc::blur_def(&tmp, &mut out, Size::new(k, k)).map_err(cv)?;
                out.copy_to(&mut roi).map_err(cv)?;
            }
            AnonymizeMethod::Pixelate => {
                let cells = Size::new((rect.width / 10).clamp(1, 6), (rect.height / 10).clamp(1, 6));
                let src = roi.try_clone().map_err(cv)?;
                let mut small = Mat::default();
                opencv::imgproc::resize(&src, &mut small, cells, 0.0, 0.0, opencv::imgproc::INTER_AREA)
                    .map_err(cv)?;
                let mut out = Mat::default();
                opencv::imgproc::resize(
                    &small,
                    &mut out,
                    Size::new(rect.width, rect.height),
                    0.0,
                    0.0,
                    opencv::imgproc::INTER_NEAREST,
                )
                .map_err(cv)?;
                out.copy_to(&mut roi).map_err(cv)?;
            }
        }
        done.push(rect);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x0: f32, y0: f32, x1: f32, y1: f32) -> Face {
        Face { x0, y0, x1, y1, score: 0.9, landmarks: [[0.0; 2]; 5] }
    }

    /// A 64 x 64 checkerboard: every 2 x 2 block alternates black and white.
    fn checker() -> Mat {
        let mut m = Mat::new_rows_cols_with_default(64, 64, opencv::core::CV_8UC3, Scalar::all(0.0)).unwrap();
        let data = m.data_bytes_mut().unwrap();
        for r in 0..64 {
            for c in 0..64 {
                let v = if (r / 2 + c / 2) % 2 == 0 { 255 } else { 0 };
                data[(r * 64 + c) * 3..(r * 64 + c) * 3 + 3].copy_from_slice(&[v, v, v]);
            }
        }
        m
    }

    fn stddev(m: &Mat, rect: Rect) -> f64 {
        let roi = Mat::roi(m, rect).unwrap();
        let (mut mean, mut dev) = (opencv::core::Vector::<f64>::new(), opencv::core::Vector::<f64>::new());
        opencv::core::mean_std_dev_def(&roi, &mut mean, &mut dev).unwrap();
        dev.get(0).unwrap()
    }

    #[test]
    fn mask_is_the_scaled_box_clipped_to_the_frame() {
        assert_eq!(mask_rect(&face(10.0, 10.0, 20.0, 30.0), 1.0, 64, 64), Some(Rect::new(10, 10, 10, 20)));
        assert_eq!(mask_rect(&face(10.0, 10.0, 20.0, 30.0), 2.0, 64, 64), Some(Rect::new(5, 0, 20, 40)));
        assert_eq!(mask_rect(&face(60.0, 60.0, 70.0, 70.0), 1.0, 64, 64), Some(Rect::new(60, 60, 4, 4)));
        assert_eq!(mask_rect(&face(70.0, 70.0, 80.0, 80.0), 1.0, 64, 64), None);
    }

    #[test]
    fn every_method_removes_the_detail_inside_the_mask_only() {
        for method in [AnonymizeMethod::Blur, AnonymizeMethod::Pixelate, AnonymizeMethod::Fill] {
            let mut m = checker();
            let done = anonymize(&mut m, &[face(8.0, 8.0, 40.0, 40.0)], method, 1.0).unwrap();
            assert_eq!(done, vec![Rect::new(8, 8, 32, 32)]);
            let inside = stddev(&m, Rect::new(12, 12, 24, 24));
            assert!(inside < 20.0, "{method:?}: detail left inside the mask: {inside}");
            let outside = stddev(&m, Rect::new(44, 44, 16, 16));
            assert!(outside > 100.0, "{method:?}: outside untouched: {outside}");
        }
    }
}
