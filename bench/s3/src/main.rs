//! The s3 plugin (through `shoal_host`, as an origin would call it) against native
//! aws-sdk-s3, on the same S3 server, in one process: download and upload of one large blob,
//! runs alternating which side goes first, printing each pair's ratio (plugin / native).
//!
//! Usage: `shoal-bench-s3 ENDPOINT BUCKET SIZE_MIB RUNS` (bench/s3.sh starts moto and runs it).
//! The server must accept any keys (moto without its auth checks).
//!
//! Both sides move the same bytes the same way: multipart uploads with 64 MiB parts sent one
//! after the other, from one 64 MiB buffer that is never copied; downloads read and count the
//! body without keeping it. aws-sdk-s3 gets no checksums and no payload signing, as the
//! plugin does neither.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream as AwsBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures_util::StreamExt;
use shoal_host::plugin::{Backend, ByteStream, PluginEngine, PluginLimits, WasmBackend};

const PART: usize = 64 << 20;
const CHUNK: usize = 1 << 20;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, bucket, size_mib, runs] = args.as_slice() else {
        bail!("usage: shoal-bench-s3 ENDPOINT BUCKET SIZE_MIB RUNS");
    };
    let size: u64 = size_mib.parse::<u64>().context("SIZE_MIB")? << 20;
    let runs: u32 = runs.parse().context("RUNS")?;
    // Bytes that are not all one value, made once; every part and chunk is a slice of them.
    let part = Bytes::from(
        (0..PART)
            .map(|i| (i as u64).wrapping_mul(2_654_435_761) as u8 ^ (i >> 20) as u8)
            .collect::<Vec<u8>>(),
    );

    let engine = PluginEngine::new(PluginLimits::default(), None)?;
    let plugin = plugin_backend(&engine, endpoint, bucket)?;
    let native = native_client(endpoint);

    // The blob both sides download, stored once.
    native_upload(&native, bucket, "bench/blob", size, &part).await?;

    let mut down = Vec::new();
    let mut up = Vec::new();
    println!(
        "{:>3}  {:>10} {:>10} {:>6}   {:>10} {:>10} {:>6}",
        "run", "down MB/s", "", "ratio", "up MB/s", "", "ratio"
    );
    println!(
        "{:>3}  {:>10} {:>10} {:>6}   {:>10} {:>10} {:>6}",
        "", "plugin", "native", "", "plugin", "native", ""
    );
    for run in 0..runs {
        let plugin_first = run % 2 == 0;
        let mut d = [0.0f64; 2];
        let mut u = [0.0f64; 2];
        for side in order(plugin_first) {
            d[side] = if side == 0 {
                timed(size, plugin_download(&plugin, "bench/blob", size)).await?
            } else {
                timed(size, native_download(&native, bucket, "bench/blob", size)).await?
            };
        }
        for side in order(plugin_first) {
            u[side] = if side == 0 {
                timed(size, plugin_upload(&plugin, "bench/up-plugin", size, &part)).await?
            } else {
                timed(
                    size,
                    native_upload(&native, bucket, "bench/up-native", size, &part),
                )
                .await?
            };
        }
        let (dr, ur) = (d[0] / d[1], u[0] / u[1]);
        down.push(dr);
        up.push(ur);
        println!(
            "{:>3}  {:>10.0} {:>10.0} {:>5.2}x   {:>10.0} {:>10.0} {:>5.2}x",
            run + 1,
            d[0],
            d[1],
            dr,
            u[0],
            u[1],
            ur
        );
    }
    println!(
        "median ratio plugin/native: download {:.2}x, upload {:.2}x ({} MiB, {runs} runs)",
        median(&mut down),
        median(&mut up),
        size >> 20
    );
    Ok(())
}

/// Side 0 is the plugin, side 1 native; alternate which goes first so both see the same
/// background load.
fn order(plugin_first: bool) -> [usize; 2] {
    if plugin_first { [0, 1] } else { [1, 0] }
}

async fn timed(size: u64, work: impl Future<Output = Result<()>>) -> Result<f64> {
    let start = Instant::now();
    work.await?;
    Ok(size as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// aws-sdk errors print only "service error" on their own; this shows the cause.
fn sdk<E: std::error::Error>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(&e))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn plugin_backend(engine: &PluginEngine, endpoint: &str, bucket: &str) -> Result<WasmBackend> {
    let yaml = format!(
        "s3:\n  region: us-east-1\n  bucket: {bucket}\n  username: bench\n  endpoint: {endpoint}\n  \
         force_path_style: true\n  upload_part_size: {PART}\n"
    );
    let config: shoal_config::Backend = serde_yaml_ng::from_str(&yaml)?;
    let secrets = BTreeMap::from([
        ("aws_access_key_id".to_owned(), "AKIABENCH".to_owned()),
        ("aws_secret_access_key".to_owned(), "bench".to_owned()),
    ]);
    Ok(engine.backend(&config, secrets)?)
}

fn native_client(endpoint: &str) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new("AKIABENCH", "bench", None, None, "bench"))
        .http_client(http)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// `size` bytes as 1 MiB slices of `part`, repeated.
fn body(size: u64, part: &Bytes) -> ByteStream {
    let part = part.clone();
    Box::pin(futures_util::stream::unfold(0u64, move |pos| {
        let part = part.clone();
        async move {
            if pos >= size {
                return None;
            }
            let at = (pos % PART as u64) as usize;
            let n = CHUNK.min(PART - at).min((size - pos) as usize);
            Some((Ok(part.slice(at..at + n)), pos + n as u64))
        }
    }))
}

async fn plugin_upload(plugin: &WasmBackend, key: &str, size: u64, part: &Bytes) -> Result<()> {
    plugin.upload("bench", key, size, body(size, part)).await?;
    Ok(())
}

async fn plugin_download(plugin: &WasmBackend, key: &str, size: u64) -> Result<()> {
    let mut got = plugin.download("bench", key, None).await?.body;
    let mut n = 0u64;
    while let Some(chunk) = got.next().await {
        n += chunk?.len() as u64;
    }
    anyhow::ensure!(n == size, "plugin download: {n} of {size} bytes");
    Ok(())
}

async fn native_download(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
) -> Result<()> {
    let mut got = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(sdk)?
        .body;
    let mut n = 0u64;
    while let Some(chunk) = got.next().await {
        n += chunk?.len() as u64;
    }
    anyhow::ensure!(n == size, "native download: {n} of {size} bytes");
    Ok(())
}

async fn native_upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
    part: &Bytes,
) -> Result<()> {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(sdk)?;
    let id = created.upload_id().context("no upload id")?.to_owned();
    let mut parts = Vec::new();
    let mut pos = 0u64;
    let mut number = 1;
    while pos < size {
        let n = (PART as u64).min(size - pos) as usize;
        let sent = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(number)
            .body(AwsBody::from(part.slice(..n)))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(sdk)?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag().map(str::to_owned))
                .build(),
        );
        pos += n as u64;
        number += 1;
    }
    let completed = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    match completed {
        Ok(_) => Ok(()),
        // moto 5.2 names the answer's root `CompleteMultipartUploadResponse`, which the SDK
        // refuses to parse; the upload itself succeeded when the status says so.
        Err(aws_sdk_s3::error::SdkError::ServiceError(e)) if e.raw().status().is_success() => {
            Ok(())
        }
        Err(e) => Err(sdk(e)),
    }
}
