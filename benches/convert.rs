//! Payload → tensor conversion and output shaping, the pure part of the hot path:
//! `cargo bench --bench convert`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use regserve::runtime::convert::{prepare, write_predictions, OutputData, OutputTensor, Style, TensorData};
use regserve::runtime::decode::prepare_body;
use regserve::runtime::payload::{parse_json, Format};
use regserve::runtime::schema::{ColSpec, DType, ModelSchema, Signature, TensorInfo, ValueKind};

fn iris_schema() -> ModelSchema {
    let cols = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        .iter()
        .map(|n| ColSpec { name: Some(n.to_string()), ty: "float".into(), required: true })
        .collect();
    let input = TensorInfo { name: "float_input".into(), kind: ValueKind::Tensor(DType::F32), shape: vec![-1, 4] };
    ModelSchema::new(vec![input], vec![], Some(Signature::Columns(cols))).unwrap()
}

fn mlp_schema() -> ModelSchema {
    let input = TensorInfo { name: "input".into(), kind: ValueKind::Tensor(DType::F32), shape: vec![-1, 64] };
    ModelSchema::new(vec![input], vec![], None).unwrap()
}

fn split_body(rows: usize) -> Vec<u8> {
    let data: Vec<String> = (0..rows).map(|i| format!("[5.{i},3.5,1.4,0.2]")).collect();
    format!(
        r#"{{"dataframe_split": {{"columns": ["sepal_length","sepal_width","petal_length","petal_width"], "data": [{}]}}}}"#,
        data.join(",")
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let iris = iris_schema();
    let mut g = c.benchmark_group("dataframe_split → tensor");
    for rows in [1usize, 100, 1000] {
        let body = split_body(rows);
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(format!("parse only, {rows} rows"), |b| b.iter(|| parse_json(black_box(&body)).unwrap()));
        g.bench_function(format!("parse + convert, {rows} rows"), |b| {
            b.iter(|| {
                let req = parse_json(black_box(&body)).unwrap();
                prepare(&iris, &req.payload).unwrap()
            })
        });
        // What the server runs: the fast path up to 64 KiB, the streaming parser beyond.
        g.bench_function(format!("prepare_body (server path), {rows} rows"), |b| {
            b.iter(|| prepare_body(&iris, Format::Json, black_box(&body)).unwrap())
        });
        g.bench_function(format!("serde_json::Value only, {rows} rows"), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
        });
    }
    g.finish();

    let mlp = mlp_schema();
    let row: Vec<String> = (0..64).map(|i| format!("{:.2}", i as f32 * 0.01)).collect();
    let body = format!(r#"{{"inputs": [[{}]]}}"#, row.join(",")).into_bytes();
    c.bench_function("inputs 1x64 → tensor", |b| {
        b.iter(|| {
            let req = parse_json(black_box(&body)).unwrap();
            prepare(&mlp, &req.payload).unwrap()
        })
    });
    c.bench_function("inputs 1x64 → tensor, prepare_body (server path)", |b| {
        b.iter(|| prepare_body(&mlp, Format::Json, black_box(&body)).unwrap())
    });
    let records: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"sepal_length":5.{i},"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}}"#))
        .collect();
    let body = format!(r#"{{"dataframe_records": [{}]}}"#, records.join(",")).into_bytes();
    c.bench_function("dataframe_records 1000 rows → tensor, prepare_body (server path)", |b| {
        b.iter(|| prepare_body(&iris, Format::Json, black_box(&body)).unwrap())
    });
    c.bench_function("dataframe_records 1000 rows → tensor, Value path", |b| {
        b.iter(|| {
            let req = parse_json(black_box(&body)).unwrap();
            prepare(&iris, &req.payload).unwrap()
        })
    });

    let mut g = c.benchmark_group("outputs → JSON");
    for rows in [1usize, 100] {
        let outputs = vec![
            OutputTensor {
                name: "label".into(),
                shape: vec![rows],
                data: OutputData::Tensor(TensorData::I64(vec![1; rows])),
            },
            OutputTensor {
                name: "probabilities".into(),
                shape: vec![rows, 3],
                data: OutputData::Tensor(TensorData::F32(vec![0.1234567; rows * 3])),
            },
        ];
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(format!("records, {rows} rows"), |b| {
            b.iter(|| {
                let mut buf = Vec::with_capacity(256);
                write_predictions(&mut buf, black_box(&outputs), Style::Records, rows);
                buf
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
