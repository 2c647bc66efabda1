//! Images for the vision tower, as Qwen-VL's processor prepares them: decoded to RGB, resized
//! to the tower's square input (Catmull-Rom, the `image` crate's bicubic; PIL's bicubic, which
//! Qwen-VL uses, differs slightly when resizing), scaled to [0, 1] and normalised with CLIP's
//! mean and standard deviation. Images already at the input size pass unresized.

use std::path::Path;

use anyhow::{anyhow, Result};
use image::imageops::FilterType;
use tch::Tensor;

/// CLIP's `image_mean` and `image_std` (OpenAI's values, which Qwen-VL keeps).
pub const MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// `[3, size, size]` float pixels of the image at `path`.
pub fn load(path: &Path, size: u32) -> Result<Tensor> {
    let decoded = image::open(path)
        .map_err(|e| anyhow!("{}: cannot read the image: {e}\n  hint: images are PNG files; check data.image_root", path.display()))?
        .to_rgb8();
    let rgb = match decoded.dimensions() == (size, size) {
        true => decoded,
        false => image::imageops::resize(&decoded, size, size, FilterType::CatmullRom),
    };
    let n = size as i64;
    let hwc = Tensor::from_slice(rgb.as_raw()).view([n, n, 3]);
    let chw = hwc.permute([2, 0, 1]).to_kind(tch::Kind::Float) / 255.0;
    let mean = Tensor::from_slice(&MEAN)
        .to_kind(tch::Kind::Float)
        .view([3, 1, 1]);
    let std = Tensor::from_slice(&STD)
        .to_kind(tch::Kind::Float)
        .view([3, 1, 1]);
    Ok((chw - mean) / std)
}
