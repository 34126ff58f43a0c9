//! A Ceph OSD's disk: a sparse 12 GiB device, offered blank; then a tenant
//! (an OSD) writes BlueStore label copies at 0, 1 GiB and 10 GiB and data
//! up to the last block of each region, and data between the regions. When
//! it is released, the wipe zeroes `wipeBytes` at each of the three offsets
//! and the last MiB — before the finalizer goes and before the device is
//! offered again — and leaves every byte between the regions as it was.

use crate::common::*;
use crate::moments::{Moments, Watch};

/// Size of the device: past the 10 GiB label copy.
const SIZE: u64 = 12 * GIB;
/// `wipeBytes` of the spec.
const WIPE_BYTES: u64 = 16 * MIB;
/// Where BlueStore keeps copies of its label inside a 12 GiB device.
const LABELS: [u64; 3] = [0, GIB, 10 * GIB];

/// A BlueStore bdev label's start: the magic, an OSD UUID, more bytes.
fn label() -> Vec<u8> {
    let mut label = b"bluestore block device\n".to_vec();
    label.extend_from_slice(b"3f1f6c1e-5c34-4b7e-9d7e-6a9f1c2b8e41\n");
    label.extend_from_slice(&[0x01, 0x02, 0x00, 0x00, 0x9c, 0x00, 0x00, 0x00]);
    label
}

/// What the tenant wrote besides the labels inside the regions a wipe
/// must zero: each region's last block and the device's last block.
fn region_ends() -> Vec<Span> {
    let mut spans: Vec<Span> = LABELS
        .iter()
        .map(|o| span(o + WIPE_BYTES - 4096, 4096))
        .collect();
    spans.push(span(SIZE - 4096, 4096));
    spans
}

/// Everything the tenant wrote inside the regions: labels and region ends.
fn inside() -> Vec<Span> {
    let labels = LABELS.iter().map(|o| span(*o, label().len() as u64));
    labels.chain(region_ends()).collect()
}

/// What the tenant wrote between the regions: just past each region, in
/// the middle of the gaps, just before the last MiB.
fn between() -> Vec<Span> {
    let mut spans: Vec<Span> = LABELS.iter().map(|o| span(o + WIPE_BYTES, 4096)).collect();
    spans.extend([span(512 * MIB, 4096), span(5 * GIB, 4096)]);
    spans.push(span(SIZE - MIB - 4096, 4096));
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bluestore_label_copies_are_wiped_and_the_bytes_between_kept() {
    let (process, world, osd, name, old_uid) =
        one_disk("ceph-a", SIZE, "16Mi", vec![]).await.parts();
    let name = name.as_str();
    let pv = world.pv(name).await.expect("the PV");
    let recorded = annotation(&pv, "local-pv-provisioner.cybozu.io/wipe-bytes");
    assert_eq!(recorded, Some(WIPE_BYTES.to_string().as_str()));
    claim_and_wait(&world, "osd-0", &pv).await;

    for offset in LABELS {
        osd.write_at(offset, &label());
    }
    tenant_writes(&osd, &region_ends());
    tenant_writes(&osd, &between());
    let watch = Watch {
        pv: name.to_string(),
        device: osd.clone(),
        spans: inside(),
    };
    let moments = Moments::install(&world, vec![watch]);
    world.delete_claim("osd-0").await;

    wait_recreated(&world, name, &old_uid).await;
    moments.assert_wiped_before_release_and_offer(name);
    for offset in LABELS {
        let region = span(offset, WIPE_BYTES);
        assert!(
            span_holds(&osd, region, 0),
            "wipeBytes at {offset} read zero"
        );
    }
    assert!(
        span_holds(&osd, span(SIZE - MIB, MIB), 0),
        "the last MiB reads zero"
    );
    for kept in between() {
        assert!(span_holds(&osd, kept, TENANT_BYTE), "untouched: {kept:?}");
    }
    wait_wiped(&process).await;
}
