//! Memory a rank uses, measured, to set beside `runner plan`'s estimate: on a GPU the caching
//! allocator's bytes in tensors (torch's `memory_allocated` and `max_memory_allocated`, read
//! through the shim), on the CPU the process's resident set (now, and its high-water mark).

use tch::Device;

extern "C" {
    fn runner_cuda_memory(device: i32, current: *mut i64, peak: *mut i64) -> i32;
}

/// (bytes now, most bytes so far) on `device`, when they can be read.
pub fn usage(device: Device) -> Option<(u64, u64)> {
    match device {
        Device::Cuda(i) => {
            let (mut current, mut peak) = (0i64, 0i64);
            let failed = unsafe { runner_cuda_memory(i as i32, &mut current, &mut peak) };
            (failed == 0).then_some((current as u64, peak as u64))
        }
        _ => {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let kib = |key: &str| -> Option<u64> {
                let line = status.lines().find(|l| l.starts_with(key))?;
                line.split_whitespace().nth(1)?.parse().ok()
            };
            Some((kib("VmRSS:")? * 1024, kib("VmHWM:")? * 1024))
        }
    }
}
