//! QLoRA's 4-bit weights (Dettmers et al. 2023), exactly as bitsandbytes 0.50 makes them on
//! the CPU, so a weight quantised here has the same bytes as one transformers quantises with
//! `load_in_4bit`:
//!
//! - the weight is flattened and cut into blocks (64 values); each block keeps its absolute
//!   maximum, and each value `x / absmax`, clamped to [−1, 1], becomes the index of the nearest
//!   of 16 code values (NF4 or FP4; a tie goes to the lower one);
//! - two indices share a byte, the first in the high nibble (a zero pads an odd count);
//! - double quantisation stores the absmax values themselves in 8 bits: minus their mean (the
//!   offset), in blocks of 256, with bitsandbytes' signed dynamic map, each value's code picked
//!   through the same 65,536-bin lookup table as bitsandbytes' CPU kernel.
//!
//! Dequantisation and the layer's matrix multiply are in `linear_4bit.cpp`: a libtorch
//! autograd function that dequantises again in backward, so no dequantised weight is kept.

use std::ffi::c_char;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::plan::training::{QuantType, Quantize};
use crate::shim::checked;

/// QLoRA's NormalFloat code book: quantiles of N(0, 1) scaled to [−1, 1], with an exact zero.
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' FP4 (sign bit, then 2 exponent and 1 mantissa bits), normalised to [−1, 1].
pub const FP4: [f32; 16] = [
    0.0,
    0.005_208_333_5,
    0.666_666_7,
    1.0,
    0.333_333_34,
    0.5,
    0.166_666_67,
    0.25,
    0.0,
    -0.005_208_333_5,
    -0.666_666_7,
    -1.0,
    -0.333_333_34,
    -0.5,
    -0.166_666_67,
    -0.25,
];

/// Absmax values per block of the nested (double) quantisation.
pub const NESTED_BLOCK: i64 = 256;
/// Bins of bitsandbytes' CPU lookup table from [−1, 1] to an 8-bit code.
const LUT_SIZE: usize = 65_536;

/// How a weight is quantised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    pub quant_type: QuantType,
    pub block: i64,
    pub double_quant: bool,
}

impl Spec {
    pub fn of(q: &Quantize) -> Spec {
        Spec {
            quant_type: q.quant_type(),
            block: i64::from(q.block_size()),
            double_quant: q.double_quant(),
        }
    }
}

/// The 8-bit absmax of double quantisation.
pub struct Nested {
    /// fp32, one per `NESTED_BLOCK` absmax values.
    pub absmax: Tensor,
    /// The 256-value dynamic map.
    pub code: Tensor,
    /// fp32 [1], the mean subtracted from the absmax values.
    pub offset: Tensor,
    pub block: i64,
}

/// A frozen weight matrix in 4 bits: bitsandbytes' packed data and `QuantState`.
pub struct FourBit {
    /// uint8 [ceil(n/2), 1].
    pub packed: Tensor,
    /// fp32 [blocks], or uint8 [blocks] with `nested`.
    pub absmax: Tensor,
    /// fp32 [16].
    pub code: Tensor,
    pub nested: Option<Nested>,
    pub quant_type: QuantType,
    pub block: i64,
    pub rows: i64,
    pub cols: i64,
}

/// The code book of a 4-bit type.
pub fn code_book(quant_type: QuantType) -> &'static [f32; 16] {
    match quant_type {
        QuantType::Nf4 => &NF4,
        QuantType::Fp4 => &FP4,
    }
}

/// Quantises a weight matrix as `bitsandbytes.functional.quantize_4bit` does on the CPU.
pub fn quantize(weight: &Tensor, spec: Spec) -> Result<FourBit> {
    let (rows, cols) = weight.size2()?;
    let device = weight.device();
    let flat = weight.detach().reshape([-1]).to_kind(Kind::Float);
    let (scaled, absmax) = tch::no_grad(|| scale_blocks(&flat, spec.block));
    let code = Tensor::from_slice(code_book(spec.quant_type)).to_device(device);
    let packed = tch::no_grad(|| pack(&nearest_code(&scaled, &code)));
    let nested = spec.double_quant.then(|| nest(&absmax)).transpose()?;
    let absmax = match &nested {
        Some((q, _)) => q.shallow_clone(),
        None => absmax,
    };
    Ok(FourBit {
        packed,
        absmax,
        code,
        nested: nested.map(|(_, n)| n),
        quant_type: spec.quant_type,
        block: spec.block,
        rows,
        cols,
    })
}

/// Each block divided by its absmax, clamped to [−1, 1], and the absmax values. As
/// bitsandbytes: whole blocks multiply by the reciprocal of their (floored) absmax and keep
/// the unfloored one; a short last block divides by its floored absmax and keeps that.
fn scale_blocks(flat: &Tensor, block: i64) -> (Tensor, Tensor) {
    let n = flat.numel() as i64;
    let rem = n % block;
    let full = n - rem;
    let whole = flat.narrow(0, 0, full).view([full / block, block]);
    let mut absmax = whole.abs().amax([-1], false);
    let inverse = absmax.clamp_min(1e-38).reciprocal().view([-1, 1]);
    let mut scaled = (whole * inverse).clamp(-1.0, 1.0).reshape([-1]);
    if rem > 0 {
        let tail = flat.narrow(0, full, rem);
        let last = tail.abs().max().clamp_min(1e-38);
        scaled = Tensor::cat(&[scaled, (tail / &last).clamp(-1.0, 1.0)], 0);
        absmax = Tensor::cat(&[absmax, last.unsqueeze(0)], 0);
    }
    (scaled, absmax)
}

/// The index of the nearest code value (ties to the lower), by the midpoints of the sorted
/// code book.
fn nearest_code(scaled: &Tensor, code: &Tensor) -> Tensor {
    let order = code.argsort(0, false);
    let sorted = code.index_select(0, &order);
    let k = sorted.size()[0] - 1;
    let midpoints = (sorted.narrow(0, 0, k) + sorted.narrow(0, 1, k)) / 2.0;
    let scaled = if scaled.size()[0] % 2 == 1 {
        scaled.constant_pad_nd([0, 1])
    } else {
        scaled.shallow_clone()
    };
    let rank = scaled.bucketize(&midpoints, true, false);
    order.index_select(0, &rank.to_kind(Kind::Int64))
}

/// Two 4-bit indices per byte, the first in the high nibble: uint8 [n/2, 1].
fn pack(indices: &Tensor) -> Tensor {
    let q = indices.to_kind(Kind::Uint8);
    let high = q.slice(0, 0, None, 2).bitwise_left_shift_tensor_scalar(4);
    let low = q.slice(0, 1, None, 2);
    high.bitwise_or_tensor(&low).unsqueeze(1)
}

/// Double quantisation: the absmax values minus their mean, in 8 bits.
fn nest(absmax: &Tensor) -> Result<(Tensor, Nested)> {
    let device = absmax.device();
    let offset = absmax.mean(Kind::Float);
    let centred = Vec::<f32>::try_from(&(absmax - &offset).to_device(Device::Cpu))?;
    let (codes, scales) = quantize_blockwise(&centred, NESTED_BLOCK as usize);
    let nested = Nested {
        absmax: Tensor::from_slice(&scales).to_device(device),
        code: Tensor::from_slice(dynamic_map()).to_device(device),
        offset: offset.reshape([1]),
        block: NESTED_BLOCK,
    };
    Ok((Tensor::from_slice(&codes).to_device(device), nested))
}

/// bitsandbytes' `create_dynamic_map(signed=True)`: for each decimal exponent 10⁻⁶ … 10⁰, the
/// midpoints of `2^i + 1` points from 0.1 to 1 (fp32, as torch computes them), both signs,
/// plus 0 and 1, sorted. Made once.
pub fn dynamic_map() -> &'static [f32] {
    static MAP: OnceLock<Vec<f32>> = OnceLock::new();
    MAP.get_or_init(make_dynamic_map)
}

fn make_dynamic_map() -> Vec<f32> {
    const SCALES: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut values = vec![0.0f32, 1.0];
    for (i, scale) in SCALES.iter().enumerate() {
        let steps = (1i64 << i) + 1;
        let bounds = Tensor::linspace(0.1, 1.0, steps, (Kind::Float, Device::Cpu));
        let means = (bounds.narrow(0, 0, steps - 1) + bounds.narrow(0, 1, steps - 1)) / 2.0;
        for sign in [1.0, -1.0] {
            let scaled = means.g_mul_scalar(sign * scale);
            values.extend(Vec::<f32>::try_from(&scaled).expect("an fp32 CPU tensor"));
        }
    }
    values.sort_by(f32::total_cmp);
    values
}

/// bitsandbytes' CPU `quantize_blockwise` with the dynamic map: per block, the absmax, then each value scaled by
/// its reciprocal and looked up in a 65,536-bin table of nearest codes over [−1, 1].
fn quantize_blockwise(values: &[f32], block: usize) -> (Vec<u8>, Vec<f32>) {
    static LUT: OnceLock<Vec<u8>> = OnceLock::new();
    let lut = LUT.get_or_init(|| lookup_table(dynamic_map()));
    let mut codes = vec![0u8; values.len()];
    let mut scales = Vec::with_capacity(values.len().div_ceil(block));
    for (chunk, out) in values.chunks(block).zip(codes.chunks_mut(block)) {
        let absmax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        scales.push(absmax);
        if absmax == 0.0 {
            continue;
        }
        let inverse = 1.0f32 / absmax;
        for (v, q) in chunk.iter().zip(out.iter_mut()) {
            *q = lut[lut_index(v * inverse)];
        }
    }
    (codes, scales)
}

/// For each of 65,536 points evenly over [−1, 1], the index of the nearest code (`code` sorted).
fn lookup_table(code: &[f32]) -> Vec<u8> {
    let midpoints: Vec<f32> = code.windows(2).map(|w| 0.5f32 * (w[0] + w[1])).collect();
    let mut index = 0;
    (0..LUT_SIZE)
        .map(|i| {
            let point = -1.0f32 + (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32;
            while index < midpoints.len() && midpoints[index] < point {
                index += 1;
            }
            index as u8
        })
        .collect()
}

fn lut_index(v: f32) -> usize {
    let v = v.clamp(-1.0, 1.0);
    ((v + 1.0f32) * 0.5f32 * (LUT_SIZE - 1) as f32 + 0.5f32) as u16 as usize
}

/// Mirrors `struct Runner4bit` in linear_4bit.cpp.
#[repr(C)]
struct Raw {
    packed: *const C_tensor,
    absmax: *const C_tensor,
    code: *const C_tensor,
    nested_absmax: *const C_tensor,
    nested_code: *const C_tensor,
    offset: *const C_tensor,
    block: i64,
    nested_block: i64,
    rows: i64,
    cols: i64,
}

extern "C" {
    fn runner_4bit_dequantize(out: *mut *mut C_tensor, raw: *const Raw) -> *mut c_char;
    fn runner_4bit_linear(
        out: *mut *mut C_tensor,
        x: *const C_tensor,
        raw: *const Raw,
    ) -> *mut c_char;
}

impl FourBit {
    pub fn to_device(self, device: Device) -> FourBit {
        FourBit {
            packed: self.packed.to_device(device),
            absmax: self.absmax.to_device(device),
            code: self.code.to_device(device),
            nested: self.nested.map(|n| Nested {
                absmax: n.absmax.to_device(device),
                code: n.code.to_device(device),
                offset: n.offset.to_device(device),
                block: n.block,
            }),
            ..self
        }
    }

    /// Values in the matrix.
    pub fn numel(&self) -> i64 {
        self.rows * self.cols
    }

    /// Bytes held: packed codes and the absmax state.
    pub fn bytes(&self) -> i64 {
        let size = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as i64;
        let nested = self
            .nested
            .as_ref()
            .map_or(0, |n| size(&n.absmax) + size(&n.code) + size(&n.offset));
        size(&self.packed) + size(&self.absmax) + size(&self.code) + nested
    }

    /// The weight in fp32 (bit for bit bitsandbytes' `dequantize_4bit`), for merging and export.
    pub fn dequantize(&self) -> Result<Tensor> {
        self.call(|out, raw| unsafe { runner_4bit_dequantize(out, raw) })
    }

    /// `x·Wᵀ` with W dequantised into x's kind, differentiable in x; backward dequantises again.
    pub fn linear(&self, x: &Tensor) -> Result<Tensor> {
        self.call(|out, raw| unsafe { runner_4bit_linear(out, x.as_ptr(), raw) })
    }

    fn call(
        &self,
        f: impl FnOnce(*mut *mut C_tensor, *const Raw) -> *mut c_char,
    ) -> Result<Tensor> {
        let null = std::ptr::null();
        let raw = Raw {
            packed: self.packed.as_ptr(),
            absmax: self.absmax.as_ptr(),
            code: self.code.as_ptr(),
            nested_absmax: self.nested.as_ref().map_or(null, |n| n.absmax.as_ptr()),
            nested_code: self.nested.as_ref().map_or(null, |n| n.code.as_ptr()),
            offset: self.nested.as_ref().map_or(null, |n| n.offset.as_ptr()),
            block: self.block,
            nested_block: self.nested.as_ref().map_or(NESTED_BLOCK, |n| n.block),
            rows: self.rows,
            cols: self.cols,
        };
        let mut out: *mut C_tensor = std::ptr::null_mut();
        let error = f(&mut out, &raw);
        checked(
            error,
            format!("4-bit weight [{}, {}]", self.rows, self.cols),
        )?;
        if out.is_null() {
            return Err(anyhow!("4-bit weight: libtorch returned no tensor"));
        }
        Ok(unsafe { Tensor::from_ptr(out) })
    }
}
