//! The process group: c10d's TCPStore rendezvous and ProcessGroupGloo (CPU) or
//! ProcessGroupNCCL (CUDA), through the C++ shim in `c10d.cpp` (compiled by `build.rs`
//! against the torch wheel's headers). Collectives are blocking and work on tch tensors in
//! place; every rank must call them in the same order with the same shapes.

use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use tch::{Device, Tensor};
use torch_sys::C_tensor;

use super::world::World;
use crate::shim::checked;

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn runner_c10d_init(
        backend: *const c_char,
        master_addr: *const c_char,
        master_port: c_int,
        rank: c_int,
        world_size: c_int,
        host_store: c_int,
        prefix: *const c_char,
        gloo_ifname: *const c_char,
        gloo_host: *const c_char,
        timeout_ms: c_int,
        cuda_device: c_int,
        group_out: *mut *mut c_void,
    ) -> *mut c_char;
    fn runner_c10d_free(group: *mut c_void);
    fn runner_c10d_has_nccl() -> c_int;
    fn runner_c10d_all_reduce(group: *mut c_void, tensor: *mut C_tensor, op: c_int) -> *mut c_char;
    fn runner_c10d_broadcast(group: *mut c_void, tensor: *mut C_tensor, root: c_int)
        -> *mut c_char;
    fn runner_c10d_all_gather(
        group: *mut c_void,
        output: *mut C_tensor,
        input: *mut C_tensor,
    ) -> *mut c_char;
    fn runner_c10d_reduce_scatter(
        group: *mut c_void,
        output: *mut C_tensor,
        input: *mut C_tensor,
        op: c_int,
    ) -> *mut c_char;
    fn runner_c10d_barrier(group: *mut c_void) -> *mut c_char;
    fn runner_tensor_drop_grad(tensor: *mut C_tensor) -> *mut c_char;
    fn runner_tensor_zero_grad_if_none(tensor: *mut C_tensor) -> *mut c_char;
    fn runner_tensor_identity(tensor: *const C_tensor) -> *const c_void;
}

/// How a reduction combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum = 0,
    Max = 1,
}

/// Whether this build can run NCCL (the libtorch it was built against has CUDA).
pub fn has_nccl() -> bool {
    unsafe { runner_c10d_has_nccl() == 1 }
}

/// Drops a tensor's gradient, freeing its memory (PyTorch's `p.grad = None`; tch can only
/// zero it). The next backward pass allocates a new one.
pub fn drop_grad(t: &Tensor) -> Result<()> {
    checked(
        unsafe { runner_tensor_drop_grad(ptr(t)) },
        "dropping a gradient",
    )
}

/// A tensor's gradient, a zero one where it has none yet (backward reached it in no
/// micro-batch of this rank), so that every rank reduces the same tensors.
pub fn gradient(t: &Tensor) -> Result<Tensor> {
    checked(
        unsafe { runner_tensor_zero_grad_if_none(ptr(t)) },
        "giving a gradient",
    )?;
    Ok(t.grad())
}

/// What every handle to one tensor shares (tch's `shallow_clone`s of a parameter): the
/// address of its TensorImpl.
pub fn identity(t: &Tensor) -> usize {
    unsafe { runner_tensor_identity(t.as_ptr()) as usize }
}

/// The ranks' process group.
pub struct ProcessGroup {
    handle: *mut c_void,
    pub rank: usize,
    pub size: usize,
}

impl ProcessGroup {
    /// Joins the world's process group on `device` (Gloo on the CPU, NCCL on a GPU), meeting
    /// the other ranks at its store within `timeout`, which also bounds every collective.
    pub fn join(world: &World, device: Device, timeout: Duration) -> Result<ProcessGroup> {
        let (backend, cuda_device) = match device {
            Device::Cuda(i) if has_nccl() => ("nccl", i as c_int),
            Device::Cuda(_) => bail!("this runner was built against a libtorch without CUDA, so it has no NCCL\n  hint: build it with ./dev on a CUDA libtorch"),
            _ => ("gloo", -1),
        };
        let c = |s: &str| CString::new(s).map_err(|_| anyhow!("`{s}` holds a NUL byte"));
        let (backend_c, addr, prefix) =
            (c(backend)?, c(&world.master_addr)?, c(&world.store_prefix)?);
        // Gloo binds to the interface named by GLOO_SOCKET_IFNAME, as torch does; else to the
        // address of the master when it is this machine's loopback (hostname lookups fail in
        // some containers), else to the host name.
        let ifname = std::env::var("GLOO_SOCKET_IFNAME")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| c(&v))
            .transpose()?;
        let loopback = ["127.0.0.1", "localhost", "::1"].contains(&world.master_addr.as_str());
        let host = loopback.then(|| c("127.0.0.1")).transpose()?;
        let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let mut handle = std::ptr::null_mut();
        let message = unsafe {
            runner_c10d_init(
                backend_c.as_ptr(),
                addr.as_ptr(),
                c_int::from(world.master_port),
                world.rank as c_int,
                world.size as c_int,
                c_int::from(world.rank == 0 && !world.agent_store),
                prefix.as_ptr(),
                ptr(&ifname),
                ptr(&host),
                timeout.as_millis().min(i32::MAX as u128) as c_int,
                cuda_device,
                &mut handle,
            )
        };
        checked(
            message,
            format!(
                "rank {} of {} could not join the process group ({backend}) at {}:{} (set up by {})",
                world.rank, world.size, world.master_addr, world.master_port, world.launcher
            ),
        )?;
        Ok(ProcessGroup {
            handle,
            rank: world.rank,
            size: world.size,
        })
    }

    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<()> {
        checked(
            unsafe { runner_c10d_all_reduce(self.handle, ptr(t), op as c_int) },
            "all-reduce",
        )
    }

    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        checked(
            unsafe { runner_c10d_broadcast(self.handle, ptr(t), root as c_int) },
            "broadcast",
        )
    }

    /// Every rank's `input` side by side in `output` (rank order; `output` holds world × input).
    pub fn all_gather(&self, output: &Tensor, input: &Tensor) -> Result<()> {
        checked(
            unsafe { runner_c10d_all_gather(self.handle, ptr(output), ptr(input)) },
            "all-gather",
        )
    }

    /// The reduction of every rank's `input`, of which this rank keeps its own slice (the
    /// `rank`-th of `world` equal parts) in `output`.
    pub fn reduce_scatter(&self, output: &Tensor, input: &Tensor, op: ReduceOp) -> Result<()> {
        checked(
            unsafe {
                runner_c10d_reduce_scatter(self.handle, ptr(output), ptr(input), op as c_int)
            },
            "reduce-scatter",
        )
    }

    pub fn barrier(&self) -> Result<()> {
        checked(unsafe { runner_c10d_barrier(self.handle) }, "barrier")
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        unsafe { runner_c10d_free(self.handle) };
    }
}

/// The `torch::Tensor*` a tch tensor wraps; the shim changes the tensor's values (or its
/// gradient), never the handle.
fn ptr(t: &Tensor) -> *mut C_tensor {
    t.as_ptr() as *mut C_tensor
}
