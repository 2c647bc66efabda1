// The NCCL half of the c10d shim (see c10d.cpp), compiled only when the libtorch found has CUDA
// (libtorch_cuda.so). Kept in its own translation unit so that c10d.cpp needs neither CUDA's nor
// NCCL's headers, and the two compile in parallel.
//
// Headers: the wheel's own, plus <site-packages>/nvidia/cu13/include (CUDA runtime; its
// crt/host_config.h and nv/target come from PyPI's nvidia-cuda-crt and nvidia-cuda-cccl, which
// ./dev installs) and <site-packages>/nvidia/nccl/include. nccl.h must be the NCCL torch was
// built with: ProcessGroupNCCL::Options embeds ncclConfig_t by value.

// What torch's own build defines for this file's headers (they are empty without them).
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#ifndef USE_CUDA
#define USE_CUDA
#endif

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>
#include <utility>

c10::intrusive_ptr<c10d::Backend> runner_c10d_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world_size,
    std::chrono::milliseconds timeout,
    int device) {
  const int count = static_cast<int>(c10::cuda::device_count());
  TORCH_CHECK(count > 0, "NCCL needs CUDA, and no CUDA device is visible");
  TORCH_CHECK(device < count, "CUDA device ", device, " does not exist (", count,
              " visible)");
  // As torch.cuda.set_device(local_rank) before init_process_group.
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size,
                                                           std::move(options));
  // As init_process_group(device_id=...): barrier() and communicator creation use this device
  // rather than guessing it from the rank.
  group->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
  return group;
}

// Starts the peak of runner_cuda_memory again from now (torch.cuda.reset_peak_memory_stats).
extern "C" int runner_cuda_reset_peak(int device) noexcept {
  try {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 1;
  }
}

// Bytes the caching allocator holds in tensors on `device` now and at most since the process
// began (torch.cuda.memory_allocated / max_memory_allocated), for the measured peak of a step.
extern "C" int runner_cuda_memory(int device, int64_t* current, int64_t* peak) noexcept {
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        static_cast<c10::DeviceIndex>(device));
    const auto& all = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    *current = all.current;
    *peak = all.peak;
    return 0;
  } catch (...) {
    return 1;
  }
}
