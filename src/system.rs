//! The machine the toolkit runs on: compute device, threads, caches, default model.

use std::path::PathBuf;

use candle_core::{DType, Device, DeviceLocation};
use serde::Serialize;

use crate::config::RunContext;
use crate::display::Show;
use crate::error::{Error, Result};
use crate::paths;
use crate::table::Table;

/// Picks the compute device: `ABT_DEVICE` (`cpu`, `cuda`, `cuda:N`) or the first GPU if the
/// crate was built for CUDA (the `cuda` feature, or `--cfg abt_cuda`) and one is present, else
/// the CPU.
pub fn device() -> Result<Device> {
    match std::env::var("ABT_DEVICE") {
        Ok(v) if !v.trim().is_empty() => parse_device(v.trim()),
        _ => Ok(Device::cuda_if_available(0)?),
    }
}

/// Parses a device name as accepted by `ABT_DEVICE`.
fn parse_device(name: &str) -> Result<Device> {
    let invalid = |reason: String| Error::InvalidEnv {
        name: "ABT_DEVICE",
        value: name.to_string(),
        reason,
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| invalid(e.to_string())),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::new_cuda(i).map_err(|e| invalid(e.to_string())),
            _ => Err(invalid("expected cpu, cuda or cuda:N".to_string())),
        },
    }
}

/// Keeps freed memory in the process instead of returning it to the kernel (glibc only).
///
/// A training step allocates and frees hundreds of tensor-sized buffers. With glibc's defaults
/// every buffer over the dynamic mmap threshold is a fresh `mmap`, page-faulted and zeroed by the
/// kernel, then `munmap`ed: measured here, a 55M-parameter LoRA step spent 85% of its time in the
/// kernel (15.5 s/step; 2.5 s/step with this). Called once when a model is built; set
/// `ABT_MALLOC_TUNING=0` to keep the defaults. The cost is that the process keeps its peak heap.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("ABT_MALLOC_TUNING").is_ok_and(|v| v == "0") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is called before the large
        // allocations of a model and is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 512 << 20);
        }
    });
}

/// A GPU's name and CUDA compute capability, which decide the dtypes it can compute in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuInfo {
    /// The name the driver reports (`Tesla T4`, `NVIDIA A100-SXM4-40GB`).
    pub name: String,
    /// Compute capability `(major, minor)`: `(7, 5)` for a T4, `(8, 0)` for an A100.
    pub capability: (u32, u32),
}

impl GpuInfo {
    /// Whether candle has bf16 kernels for it: they are compiled for sm_80 and newer only.
    pub fn has_bf16(&self) -> bool {
        self.capability >= (8, 0)
    }

    /// Whether candle has f16 kernels for it (sm_53 and newer).
    pub fn has_f16(&self) -> bool {
        self.capability >= (5, 3)
    }

    /// `Tesla T4 (sm_75)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (sm_{}{})",
            self.name, self.capability.0, self.capability.1
        )
    }
}

/// The GPU behind `device`, or `None` for the CPU (and other backends).
pub fn gpu_info(device: &Device) -> Result<Option<GpuInfo>> {
    #[cfg(abt_cuda)]
    if let Device::Cuda(cuda) = device {
        let stream = cuda.cuda_stream();
        let context = stream.context();
        let driver = |e: candle_core::cuda_backend::cudarc::driver::DriverError| {
            Error::Candle(candle_core::Error::Msg(format!("querying the GPU: {e}")))
        };
        let (major, minor) = context.compute_capability().map_err(driver)?;
        return Ok(Some(GpuInfo {
            name: context.name().map_err(driver)?,
            capability: (major.max(0) as u32, minor.max(0) as u32),
        }));
    }
    let _ = device;
    Ok(None)
}

/// Parses `ABT_DTYPE`: `auto` (or unset) lets the device choose; `f32`, `f16`, `bf16` force one.
fn requested_dtype() -> Result<Option<DType>> {
    let value = match std::env::var("ABT_DTYPE") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_ascii_lowercase(),
        _ => return Ok(None),
    };
    match value.as_str() {
        "auto" => Ok(None),
        "f32" | "float32" => Ok(Some(DType::F32)),
        "f16" | "float16" | "fp16" => Ok(Some(DType::F16)),
        "bf16" | "bfloat16" => Ok(Some(DType::BF16)),
        _ => Err(Error::InvalidEnv {
            name: "ABT_DTYPE",
            value,
            reason: "expected auto, f32, f16 or bf16".to_string(),
        }),
    }
}

/// The dtype for a device: `requested`, checked against what the GPU has kernels for, or
/// by default f32 on the CPU (no fast half-precision matmul there), bf16 on sm_80+ GPUs (the
/// method's precision), f16 on older ones with f16 kernels (a T4), else f32.
pub fn choose_dtype(requested: Option<DType>, gpu: Option<&GpuInfo>) -> Result<DType> {
    let Some(gpu) = gpu else {
        return Ok(requested.unwrap_or(DType::F32));
    };
    let unsupported = |dtype: &'static str, fix: &str| Error::UnsupportedDtype {
        device: gpu.describe(),
        dtype,
        reason: format!(
            "candle's {dtype} kernels need compute capability {fix}; set ABT_DTYPE=auto (or \
             unset it) to use {} on this GPU",
            choose_dtype(None, Some(gpu))
                .map(|d| d.as_str())
                .unwrap_or("f32")
        ),
    };
    match requested {
        Some(DType::BF16) if !gpu.has_bf16() => Err(unsupported("bf16", "8.0 or newer (A100, L4)")),
        Some(DType::F16) if !gpu.has_f16() => Err(unsupported("f16", "5.3 or newer")),
        Some(dtype) => Ok(dtype),
        None if gpu.has_bf16() => Ok(DType::BF16),
        None if gpu.has_f16() => Ok(DType::F16),
        None => Ok(DType::F32),
    }
}

/// The dtype models load in on `device`: `ABT_DTYPE` if set, else what the device computes
/// best in (see [`choose_dtype`]). An unusable choice is an error here, naming the GPU, before
/// any model is loaded.
pub fn compute_dtype(device: &Device) -> Result<DType> {
    choose_dtype(requested_dtype()?, gpu_info(device)?.as_ref())
}

/// A short name for a device, in the form `ABT_DEVICE` accepts: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".to_string(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Measures matrix-multiply throughput on `device`: GFLOP/s of an `n`×`n` f32 matmul, best of
/// `reps` runs after one warm-up. A quick check that candle runs optimised on this machine.
pub fn matmul_gflops(device: &Device, n: usize, reps: usize) -> Result<f64> {
    let a = candle_core::Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = candle_core::Tensor::randn(0f32, 1.0, (n, n), device)?;
    a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = std::time::Instant::now();
        // Reading one value back waits for asynchronous devices to finish.
        a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// What `abt env` prints: everything needed to tell whether this machine is ready.
#[derive(Debug, Clone, Serialize)]
pub struct SystemReport {
    /// The crate version.
    pub version: String,
    /// The device computations run on.
    pub device: String,
    /// The GPU, if the device is one.
    pub gpu: Option<GpuInfo>,
    /// The dtype models compute in on that device.
    pub dtype: String,
    /// Whether the crate was built with CUDA support.
    pub cuda_built: bool,
    /// Threads candle uses on the CPU.
    pub cpu_threads: usize,
    /// CPU SIMD features candle was compiled to use.
    pub cpu_features: Vec<&'static str>,
    /// The active run profile.
    pub profile: String,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The project cache.
    pub cache_dir: PathBuf,
    /// The Hugging Face hub cache.
    pub hf_hub_cache: PathBuf,
    /// The notebook kernel's persistent build directory.
    pub evcxr_build_dir: PathBuf,
    /// Where the default model is expected.
    pub default_model: PathBuf,
    /// Its size in bytes, if it is present.
    pub default_model_bytes: Option<u64>,
}

impl SystemReport {
    /// Inspects the machine and the environment.
    pub fn collect() -> Result<Self> {
        let ctx = RunContext::from_env()?;
        let device = device()?;
        let gpu = gpu_info(&device)?;
        let default_model = paths::default_model_path();
        let default_model_bytes = std::fs::metadata(&default_model)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let cpu_features = [
            (candle_core::utils::with_avx(), "avx"),
            (candle_core::utils::with_f16c(), "f16c"),
            (candle_core::utils::with_neon(), "neon"),
            (candle_core::utils::with_simd128(), "simd128"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        Ok(SystemReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            device: device_name(&device),
            dtype: choose_dtype(requested_dtype()?, gpu.as_ref())?
                .as_str()
                .to_string(),
            gpu,
            cuda_built: cfg!(abt_cuda),
            cpu_threads: candle_core::utils::get_num_threads(),
            cpu_features,
            profile: ctx.profile.to_string(),
            run_dir: ctx.run_dir,
            cache_dir: paths::cache_dir(),
            hf_hub_cache: paths::hf_hub_cache_dir(),
            evcxr_build_dir: paths::evcxr_build_dir(),
            default_model,
            default_model_bytes,
        })
    }

    /// The report as a two-column table.
    pub fn table(&self) -> Table {
        let model = match self.default_model_bytes {
            Some(b) => format!("present ({:.1} MB)", b as f64 / 1e6),
            None => "missing: run `bash scripts/fetch_default_model.sh`".to_string(),
        };
        let features = if self.cpu_features.is_empty() {
            "none".to_string()
        } else {
            self.cpu_features.join(", ")
        };
        Table::settings(
            "agentbench-tuning environment",
            [
                ("version", self.version.clone()),
                ("device", self.device.clone()),
                (
                    "gpu",
                    self.gpu
                        .as_ref()
                        .map_or_else(|| "none".to_string(), GpuInfo::describe),
                ),
                ("dtype", self.dtype.clone()),
                ("cuda built", self.cuda_built.to_string()),
                ("cpu threads", self.cpu_threads.to_string()),
                ("cpu features", features),
                ("profile", self.profile.clone()),
                ("run dir", self.run_dir.display().to_string()),
                ("cache dir", self.cache_dir.display().to_string()),
                ("hf hub cache", self.hf_hub_cache.display().to_string()),
                (
                    "evcxr build dir",
                    self.evcxr_build_dir.display().to_string(),
                ),
                ("default model", self.default_model.display().to_string()),
                ("default model status", model),
            ],
        )
    }
}

impl Show for SystemReport {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        self.table().mime_bundle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert_eq!(device_name(&Device::Cpu), "cpu");
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(
            err.contains("ABT_DEVICE") && err.contains("cuda:N"),
            "{err}"
        );
    }

    #[test]
    fn the_dtype_follows_the_gpu_and_a_forced_one_it_lacks_is_named() {
        let gpu = |name: &str, capability| GpuInfo {
            name: name.to_string(),
            capability,
        };
        let (t4, a100, l4) = (
            gpu("Tesla T4", (7, 5)),
            gpu("NVIDIA A100-SXM4-40GB", (8, 0)),
            gpu("NVIDIA L4", (8, 9)),
        );
        let k80 = gpu("Tesla K80", (3, 7));
        assert_eq!(choose_dtype(None, None).unwrap(), DType::F32);
        assert_eq!(choose_dtype(None, Some(&a100)).unwrap(), DType::BF16);
        assert_eq!(choose_dtype(None, Some(&l4)).unwrap(), DType::BF16);
        assert_eq!(choose_dtype(None, Some(&t4)).unwrap(), DType::F16);
        assert_eq!(choose_dtype(None, Some(&k80)).unwrap(), DType::F32);
        for dtype in [DType::F32, DType::F16] {
            assert_eq!(choose_dtype(Some(dtype), Some(&t4)).unwrap(), dtype);
        }
        assert_eq!(choose_dtype(Some(DType::BF16), None).unwrap(), DType::BF16);
        let err = choose_dtype(Some(DType::BF16), Some(&t4))
            .unwrap_err()
            .to_string();
        for part in ["Tesla T4 (sm_75)", "bf16", "8.0", "ABT_DTYPE=auto", "f16"] {
            assert!(err.contains(part), "{part} missing from: {err}");
        }
        let err = choose_dtype(Some(DType::F16), Some(&k80))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Tesla K80 (sm_37)") && err.contains("f32"),
            "{err}"
        );
    }

    #[test]
    fn matmul_throughput_is_positive() {
        let gflops = matmul_gflops(&Device::Cpu, 64, 2).unwrap();
        assert!(gflops.is_finite() && gflops > 0.0, "{gflops}");
    }

    #[test]
    fn report_lists_every_setting() {
        let report = SystemReport::collect().unwrap();
        let text = report.table().to_string();
        for key in ["device", "cpu threads", "cache dir", "default model status"] {
            assert!(text.contains(key), "missing {key} in\n{text}");
        }
        assert!(report.cpu_threads >= 1);
    }
}
