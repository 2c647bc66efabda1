//! Memory a rank uses, measured, to set beside `runner plan`'s estimate: on a GPU the caching
//! allocator's bytes in tensors (torch's `memory_allocated` and `max_memory_allocated`, read
//! through the shim), on the CPU the process's resident set (now, and its high-water mark).

use tch::Device;

extern "C" {
    fn runner_cuda_memory(device: i32, current: *mut i64, peak: *mut i64) -> i32;
    fn runner_cuda_reset_peak(device: i32) -> i32;
}

/// Serves every large host allocation from its own mapping, returned to the system when freed.
/// Data-parallel ranks free and allocate whole buckets (ZeRO-3: whole layers) every step; with
/// glibc's default a freed mapping raises its threshold, and later ones come from a heap that
/// fragments and only grows (measured: under ZeRO-3 a 100M-parameter model's peak grew by 1 GB
/// over 5 steps, not by 0.1 GB), and the measured peaks of the ZeRO stages varied by 0.2 GB
/// from run to run. torch's caching allocator does this job on CUDA. Called before the weights
/// are built; one-process runs keep glibc's default, faster for them (page faults cost 20%).
pub fn map_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Starts the "most bytes so far" of [`usage`] again from now (torch's
/// `reset_peak_memory_stats`; on the CPU, freed memory returned to the system and Linux's
/// reset of the resident high-water mark, `clear_refs` 5), so that a later peak is that of
/// what follows, not of building the model.
pub fn reset_peak(device: Device) {
    match device {
        Device::Cuda(i) => {
            unsafe { runner_cuda_reset_peak(i as i32) };
        }
        // Where /proc does not allow it, the peak counts from the process's start.
        _ => {
            // Memory freed but kept by the allocator would count as held.
            crate::models::store::release_freed_memory();
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
    }
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
