//! 影诗 yingshi: a photo in, a classical Chinese poem out.
//!
//! The pipeline, one module a stage:
//!
//! ```text
//! photo bytes ──photo──▶ pixels ──embedding──▶ image feature
//!            ──keywords──▶ top-K imagery words ──poem──▶ 五绝/七绝/五律/七律
//! ```
//!
//! Only [`bot`] knows Discord; it reaches the pipeline through the model
//! thread ([`worker`]), as the CLI calls [`pipeline`] directly. Both models
//! read their weights through `weights`.

mod activation;
pub mod bench;
pub mod bot;
pub mod config;
mod cpu_kernels;
pub mod device;
pub mod embedding;
pub mod error;
pub mod keywords;
mod linear;
pub mod photo;
pub mod pipeline;
pub mod poem;
mod weights;
pub mod worker;

pub use linear::kernels_in_use;
