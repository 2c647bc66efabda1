// A small C ABI over torch's c10d (the engine under torch.distributed), for the Rust side in
// runner/distributed/. Rendezvous through a TCPStore wrapped in a PrefixStore (as torch's
// `_create_c10d_store` does), then ProcessGroupGloo (CPU tensors) or ProcessGroupNCCL (CUDA
// tensors, built from c10d_nccl.cpp when the libtorch found has CUDA). Collectives work in place
// on tch tensors: `tch::Tensor::as_mut_ptr()` is a `torch::Tensor*`, that is an `at::Tensor*`.
//
// Built by build.rs with the wheel's headers and Gloo's headers from Debian's libgloo-dev (the
// Gloo implementation itself is libtorch_cpu's; Debian's libgloo is not linked). Only Gloo's
// ABI-neutral surface is used here: `std::shared_ptr<gloo::transport::Device>` from torch's own
// factories, and ProcessGroupGloo's out-of-line members. Nothing that would instantiate a Gloo
// class's vtable or inline Gloo algorithms (ProcessGroupGlooDetail.hpp) is included, so the
// 2022 Gloo snapshot's headers cannot disagree with the Gloo compiled into libtorch_cpu.
//
// Every function returning char* follows the shim's convention (../shim.h).

#include <ATen/ATen.h>

#include "../shim.h"

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#ifdef RUNNER_C10D_NCCL
// Defined in c10d_nccl.cpp (C++ linkage, internal to the shim): a ProcessGroupNCCL on `device`.
c10::intrusive_ptr<c10d::Backend> runner_c10d_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world_size,
    std::chrono::milliseconds timeout,
    int device);
#endif

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;  // the PrefixStore (it holds the TCPStore)
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank = 0;
  int world_size = 1;
  bool nccl = false;
};

using runner_shim::guarded;

Group& group_of(void* group) {
  TORCH_CHECK(group != nullptr, "null process group handle");
  return *static_cast<Group*>(group);
}

at::Tensor& tensor_of(at::Tensor* tensor, const char* name) {
  TORCH_CHECK(tensor != nullptr, "null ", name, " tensor");
  TORCH_CHECK(tensor->defined(), "undefined ", name, " tensor");
  return *tensor;
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp::SUM;
    case 1:
      return c10d::ReduceOp::MAX;
    case 2:
      return c10d::ReduceOp::MIN;
    default:
      TORCH_CHECK(false, "unknown reduce op ", op, " (0 = sum, 1 = max, 2 = min)");
  }
}

// A contiguous tensor to work on in place: `tensor` itself, or a contiguous copy whose result
// `finish` writes back (collectives need dense, contiguous buffers).
struct InPlace {
  at::Tensor& original;
  at::Tensor work;
  explicit InPlace(at::Tensor& t) : original(t), work(t.is_contiguous() ? t : t.contiguous()) {}
  void finish() {
    if (!work.is_same(original)) original.copy_(work);
  }
};

// Gloo: blocks until the collective is done (or fails: a dead peer at once, a silent one after
// the timeout). NCCL: as in PyTorch, makes the current CUDA stream wait for the collective, so
// later work on that stream (and any copy to the CPU) sees its result.
void wait(const c10::intrusive_ptr<c10d::Work>& work) {
  TORCH_CHECK(work, "the backend returned no work handle");
  work->wait();
}

void check_gather_shapes(const Group& g, const at::Tensor& big, const at::Tensor& small,
                         const char* big_name, const char* small_name) {
  TORCH_CHECK(big.scalar_type() == small.scalar_type(), big_name, " is ", big.scalar_type(),
              " but ", small_name, " is ", small.scalar_type());
  TORCH_CHECK(big.device() == small.device(), big_name, " is on ", big.device(), " but ",
              small_name, " is on ", small.device());
  TORCH_CHECK(big.numel() == small.numel() * g.world_size, big_name, " has ", big.numel(),
              " elements, not world_size (", g.world_size, ") x ", small_name, "'s ",
              small.numel());
}

}  // namespace

extern "C" {

char* runner_c10d_init(const char* backend, const char* master_addr, int master_port, int rank,
                       int world_size, int host_store, const char* prefix,
                       const char* gloo_ifname, const char* gloo_host, int timeout_ms,
                       int cuda_device, void** group_out) {
  if (group_out != nullptr) *group_out = nullptr;
  return guarded("c10d init", [&] {
    TORCH_CHECK(group_out != nullptr, "null group_out");
    TORCH_CHECK(backend != nullptr, "null backend name");
    TORCH_CHECK(master_addr != nullptr, "null master address");
    TORCH_CHECK(master_port > 0 && master_port <= 65535, "master port ", master_port,
                " is not in 1..65535");
    TORCH_CHECK(world_size >= 1, "world size ", world_size, " < 1");
    TORCH_CHECK(rank >= 0 && rank < world_size, "rank ", rank, " is not in 0..", world_size);
    TORCH_CHECK(timeout_ms > 0, "timeout ", timeout_ms, " ms is not positive");
    const std::string name(backend);
    TORCH_CHECK(name == "gloo" || name == "nccl", "unknown c10d backend '", name,
                "' (gloo or nccl)");
#ifndef RUNNER_C10D_NCCL
    TORCH_CHECK(name != "nccl",
                "this build has no NCCL: the libtorch it was built against has no CUDA "
                "(libtorch_cuda.so)");
#endif
    const std::chrono::milliseconds timeout(timeout_ms);

    // As torch's _create_c10d_store: the server waits for world_size connections; keys go
    // under `prefix` so that they do not collide with torchrun's agent's own.
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(master_port);
    opts.isServer = host_store != 0;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = true;
    opts.timeout = timeout;
    opts.multiTenant = true;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>(prefix != nullptr ? prefix : "",
                                                        std::move(tcp));

    auto g = std::make_unique<Group>();
    g->store = store;
    g->rank = rank;
    g->world_size = world_size;
    if (name == "gloo") {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      if (gloo_ifname != nullptr && gloo_ifname[0] != '\0') {
        options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(gloo_ifname));
      } else if (gloo_host != nullptr && gloo_host[0] != '\0') {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(gloo_host));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size,
                                                               std::move(options));
    } else {
#ifdef RUNNER_C10D_NCCL
      TORCH_CHECK(cuda_device >= 0, "CUDA device ", cuda_device, " < 0");
      g->backend = runner_c10d_make_nccl(store, rank, world_size, timeout, cuda_device);
      g->nccl = true;
#endif
    }
    *group_out = g.release();
  });
}

void runner_c10d_free(void* group) {
  if (group == nullptr) return;
  auto* g = static_cast<Group*>(group);
  try {
    // NCCL wants its communicators shut down explicitly (as destroy_process_group does);
    // Gloo's shutdown is a no-op and its destructor joins its worker threads.
    if (g->backend) g->backend->shutdown();
  } catch (...) {
  }
  try {
    g->backend.reset();
    g->store.reset();
  } catch (...) {
  }
  try {
    delete g;
  } catch (...) {
  }
}

int runner_c10d_has_nccl(void) {
#ifdef RUNNER_C10D_NCCL
  return 1;
#else
  return 0;
#endif
}

#ifndef RUNNER_C10D_NCCL
// Without CUDA there is no CUDA memory to report (c10d_nccl.cpp defines the real one).
int runner_cuda_memory(int, int64_t*, int64_t*) noexcept { return 1; }
int runner_cuda_reset_peak(int) noexcept { return 1; }
#endif

char* runner_c10d_all_reduce(void* group, at::Tensor* tensor, int op) {
  return guarded("all_reduce", [&] {
    Group& g = group_of(group);
    InPlace t(tensor_of(tensor, "all_reduce"));
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    std::vector<at::Tensor> tensors{t.work};
    wait(g.backend->allreduce(tensors, opts));
    t.finish();
  });
}

char* runner_c10d_broadcast(void* group, at::Tensor* tensor, int root) {
  return guarded("broadcast", [&] {
    Group& g = group_of(group);
    TORCH_CHECK(root >= 0 && root < g.world_size, "root ", root, " is not in 0..",
                g.world_size);
    InPlace t(tensor_of(tensor, "broadcast"));
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    std::vector<at::Tensor> tensors{t.work};
    wait(g.backend->broadcast(tensors, opts));
    t.finish();
  });
}

char* runner_c10d_all_gather(void* group, at::Tensor* output, at::Tensor* input) {
  return guarded("all_gather", [&] {
    Group& g = group_of(group);
    InPlace out(tensor_of(output, "all_gather output"));
    at::Tensor in = tensor_of(input, "all_gather input").contiguous();
    check_gather_shapes(g, out.work, in, "output", "input");
    wait(g.backend->_allgather_base(out.work, in, c10d::AllgatherOptions()));
    out.finish();
  });
}

char* runner_c10d_reduce_scatter(void* group, at::Tensor* output, at::Tensor* input, int op) {
  return guarded("reduce_scatter", [&] {
    Group& g = group_of(group);
    InPlace out(tensor_of(output, "reduce_scatter output"));
    at::Tensor in = tensor_of(input, "reduce_scatter input").contiguous();
    check_gather_shapes(g, in, out.work, "input", "output");
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = reduce_op(op);
    // torch 2.11's ProcessGroupGloo implements _reduce_scatter_base (sum and max checked on
    // float32 and bfloat16, input left unchanged), as ProcessGroupNCCL does: no all_reduce
    // fallback is needed.
    wait(g.backend->_reduce_scatter_base(out.work, in, opts));
    out.finish();
  });
}

char* runner_c10d_barrier(void* group) {
  return guarded("barrier", [&] {
    Group& g = group_of(group);
    wait(g.backend->barrier(c10d::BarrierOptions()));
  });
}

char* runner_tensor_drop_grad(at::Tensor* tensor) {
  return guarded("drop_grad", [&] {
    at::Tensor& t = tensor_of(tensor, "drop_grad");
    if (t.grad().defined()) t.mutable_grad() = at::Tensor();
  });
}

// Gives a tensor without a gradient a zero one (every rank then reduces the same tensors).
char* runner_tensor_zero_grad_if_none(at::Tensor* tensor) {
  return guarded("zero_grad_if_none", [&] {
    at::Tensor& t = tensor_of(tensor, "zero_grad_if_none");
    if (!t.grad().defined()) t.mutable_grad() = at::zeros_like(t);
  });
}

// The TensorImpl behind a handle: tch's shallow clones of one parameter all share it.
const void* runner_tensor_identity(const at::Tensor* tensor) {
  return tensor == nullptr ? nullptr : tensor->unsafeGetTensorImpl();
}

}  // extern "C"
