//! Where the models run and in what precision: `models.device` and `models.dtype`.

use candle_core::{DType, Device};

use crate::error::PlacementError;

#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    pub dtype: DType,
}

impl Placement {
    pub fn parse(device: &str, dtype: &str) -> Result<Self, PlacementError> {
        let device = parse_device(device)?;
        let dtype = parse_dtype(dtype, &device)?;
        Ok(Self { device, dtype })
    }
}

/// Fixes how many threads the models use on the CPU (`models.cpu_threads`;
/// 0: every core this process may use) and returns that number. It sets
/// `RAYON_NUM_THREADS` (and `CANDLE_NUM_THREADS`, below), which candle reads.
///
/// candle asks for its thread count on every matrix product; without
/// `RAYON_NUM_THREADS` it counts the physical cores by reading
/// `/proc/cpuinfo` each time, which cost 15–20 % of a poem's time on two cores.
///
/// # Safety
/// Setting the environment is sound only while no other thread reads or
/// writes it: call this first thing in `main`, before a runtime, a model or
/// a thread pool starts threads. So a caller has to say so:
///
/// ```compile_fail
/// yingshi::device::pin_cpu_threads(2);
/// ```
pub unsafe fn pin_cpu_threads(setting: usize) -> usize {
    let threads = if setting > 0 { setting } else { cpu_threads() };
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    // candle splits element-wise ops of 64 Ki elements or more across a pool
    // of its own whose workers spin while they wait; the poet's encoder waited
    // on it for a fifth of its time. Without that pool (the matrix products
    // keep `threads`), on a 2-core AMD EPYC, alternating runs: a poem 261–264
    // against 296–342 ms, a photo 174–195 against 192–219 ms, served batches
    // of 8 photos 1.60 against 1.56 photos/s, the vocabulary 6.0–6.4 against
    // 5.7 s (once, then cached). CANDLE_NUM_THREADS, when set, still decides.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    threads
}

/// Sets glibc's allocator for the models' passes. Call it before other
/// threads start.
/// - **One arena** for every thread. The passes run on the pool's threads
///   ([`on_cpu_pool`]), and glibc gives each thread that allocates while
///   another does an arena of its own, which keeps what its thread freed:
///   peak memory of `poem --image` with the ViT-B/16 812,852 against
///   793,480 kB before the passes moved, 796,312 kB with one arena. The
///   passes allocate a few blocks a product, so the shared lock is rarely
///   waited on.
/// - **Freed memory kept** for the next pass: a pass frees the same sizes
///   it will ask for again, and glibc gave the top of the heap back to the
///   kernel once more than its trim threshold lay free there (128 KiB at
///   first, then twice the largest mmapped block freed, at most 64 MiB), so
///   the next pass's blocks faulted their pages in afresh, each zeroed by
///   the kernel (clear_page and page faults were about 4 % of a profile of
///   8 served clients). So the heap is never trimmed, and blocks up to
///   32 MiB (glibc's most for this setting on 64 bits) come from it rather
///   than from mmap. Peak memory is unchanged (`poem --image`:
///   796,116–796,636 kB against 796,524–797,132 kB; 8 served clients
///   923,276 against 921,160 kB); what a pass frees stays resident until
///   the process ends, so a long-running bot stays at its peak. Intel Xeon,
///   three alternations: 8 served clients 3,577 → 3,298 ms (AVX-512 held
///   back: 5,814 → 5,621 ms), a poem 199 → 190 ms, the vocabulary 6.3 →
///   5.9 s.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (setting, value, name) in [
        (libc::M_ARENA_MAX, 1, "one arena"),
        // -1: never trim.
        (libc::M_TRIM_THRESHOLD, -1, "no trimming"),
        (libc::M_MMAP_THRESHOLD, 32 << 20, "mmap from 32 MiB"),
    ] {
        // SAFETY: mallopt only changes a setting of the allocator.
        if unsafe { libc::mallopt(setting, value) } != 1 {
            tracing::warn!("glibc refused the allocator setting {name}");
        }
    }
}

/// The threads the models use on the CPU: `RAYON_NUM_THREADS`, else every
/// core this process may use.
pub fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `work` on a thread of rayon's pool, the pool the models' parallel
/// products and element-wise passes split their work over, and returns its
/// result. From a thread outside the pool every parallel pass hands its
/// tasks over, wakes the pool's threads and sleeps until they finish: three
/// threads taking turns on the cores, with a sleep and a wake-up per matrix
/// product (a decoder step has 55). On a pool thread the caller does its
/// share and only the others wake. A model's call from the pool runs in
/// place. Intel Xeon, 2 threads, a 七绝 of 8 candidates, alternating: 213 /
/// 220 / 211 ms from the pool against 253 / 268 / 260 ms from outside.
///
/// Not for work that waits on other threads (the chat LLM's engine): a pool
/// thread that waits is one fewer for the products of the thread it waits on.
pub(crate) fn on_cpu_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    // `rayon::scope` runs its closure on a pool thread, handing it over from
    // outside the pool; the scope itself spawns nothing.
    rayon::scope(|_| work())
}

/// `models.device` as written: checked without touching a GPU, so that
/// validating the settings sets nothing up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceSetting {
    Cpu,
    Auto,
    Cuda(usize),
}

impl DeviceSetting {
    pub(crate) fn parse(setting: &str) -> Result<Self, PlacementError> {
        match setting {
            "cpu" => Ok(DeviceSetting::Cpu),
            "auto" => Ok(DeviceSetting::Auto),
            _ => setting
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceSetting::Cuda)
                .ok_or_else(|| PlacementError::Device(setting.to_owned())),
        }
    }
}

/// `cpu`, `cuda:N` or `auto` (the first GPU when this build has CUDA and one is usable).
pub(crate) fn parse_device(setting: &str) -> Result<Device, PlacementError> {
    match DeviceSetting::parse(setting)? {
        DeviceSetting::Cpu => Ok(Device::Cpu),
        DeviceSetting::Auto => Ok(match Device::cuda_if_available(0) {
            Ok(gpu @ Device::Cuda(_)) => {
                tracing::info!("models.device = auto: running on GPU 0 (CUDA)");
                gpu
            }
            _ => {
                tracing::info!(
                    "models.device = auto: no usable GPU in this build, running on the CPU"
                );
                Device::Cpu
            }
        }),
        DeviceSetting::Cuda(ordinal) => {
            Device::new_cuda(ordinal).map_err(|e| PlacementError::NoGpu {
                setting: setting.to_owned(),
                cause: Box::new(e),
            })
        }
    }
}

/// `auto` (bf16 on a GPU, f32 on the CPU), `f32` or `bf16`. Not f16: T5's
/// activations overflow it.
pub(crate) fn parse_dtype(setting: &str, device: &Device) -> Result<DType, PlacementError> {
    match setting {
        "auto" if device.is_cpu() => Ok(DType::F32),
        // bf16 keeps f32's range: T5's activations overflow f16.
        "auto" => Ok(DType::BF16),
        "f32" => Ok(DType::F32),
        "bf16" if device.is_cpu() => Err(PlacementError::Bf16OnCpu),
        "bf16" => Ok(DType::BF16),
        _ => Err(PlacementError::Dtype(setting.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_follow_the_device() {
        assert!(matches!(parse_dtype("auto", &Device::Cpu), Ok(DType::F32)));
        let err = parse_dtype("bf16", &Device::Cpu).unwrap_err();
        assert!(matches!(err, PlacementError::Bf16OnCpu));
        assert!(err.to_string().contains("GPU"), "{err}");
        for unknown in ["f16", "f8"] {
            let err = parse_dtype(unknown, &Device::Cpu).unwrap_err();
            assert!(matches!(&err, PlacementError::Dtype(d) if d == unknown));
            assert!(err.to_string().contains("bf16"), "{err}");
        }
        let err = parse_device("cuda:x").unwrap_err();
        assert!(matches!(err, PlacementError::Device(_)));
        assert!(err.to_string().contains("cuda:N"), "{err}");
    }
}
