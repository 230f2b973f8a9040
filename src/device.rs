//! Where the models run: the `models.device` setting.

use candle_core::Device;

/// `cpu`, `cuda:N` or `auto` (the first GPU when this build has CUDA and one is usable).
pub fn parse_device(setting: &str) -> Result<Device, String> {
    match setting {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        _ => {
            let ordinal = setting
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| format!("'{setting}': expected cpu, auto or cuda:N"))?;
            Device::new_cuda(ordinal).map_err(|e| {
                format!("'{setting}': no usable GPU ({e}); build with --features cuda, or use cpu")
            })
        }
    }
}
