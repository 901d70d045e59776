"""``forgeml export``: export a model to TorchScript, ONNX or TensorRT, checked against it.

Every option is also spelled with underscores (``--dynamic_batch``), as in
``forgeml eval``.
"""

from __future__ import annotations

import click

from forgeml.cli._options import option


@click.command("export")
@click.argument("model")
@option(
    "to",
    metavar="TARGET",
    required=True,
    help="The format to export to: onnx, torchscript or tensorrt.",
)
@click.option(
    "-o",
    "--output",
    "output",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where the export goes. Default: FORGEML_HOME/exports/<name><suffix>.",
)
@option(
    "framework",
    metavar="NAME",
    default=None,
    help="The source framework, when MODEL has manifests for several that export to TARGET.",
)
@option("opset", metavar="N", type=int, default=None, help="ONNX opset (default 17; XGBoost 15).")
@click.option(
    "--dynamic-batch/--static-batch",
    "--dynamic_batch/--static_batch",
    "dynamic_batch",
    default=True,
    show_default=True,
    help="Leave the batch axis open (ONNX, TensorRT), or fix it to --batch-size.",
)
@option("fp16", is_flag=True, help="Half-precision weights and arithmetic (inputs stay float32).")
@option("int8", is_flag=True, help="TensorRT INT8 kernels, calibrated on --calibration.")
@option(
    "calibration",
    metavar="DATASET",
    default=None,
    help="The data INT8 calibration reads: a bundled name or a path.",
)
@option(
    "method",
    type=click.Choice(["trace", "script"]),
    default=None,
    help="TorchScript: trace the model on a batch (default) or script (compile) it.",
)
@option(
    "atol",
    metavar="X",
    type=float,
    default=None,
    help="Absolute tolerance of the parity check (default: fp32 1e-4, fp16 1e-2).",
)
@option(
    "rtol",
    metavar="X",
    type=float,
    default=None,
    help="Relative tolerance of the parity check (default: fp32 1e-3, fp16 1e-2).",
)
@option(
    "dataset",
    metavar="NAME|PATH",
    default=None,
    help="The validation data. Default: the held-out part of the model's training dataset.",
)
@option(
    "batch_size",
    metavar="N",
    type=int,
    default=64,
    show_default=True,
    help="Samples in the validation batch.",
)
@option(
    "runs",
    metavar="N",
    type=int,
    default=20,
    show_default=True,
    help="Timed runs of the batch per model for the latency comparison (0: none).",
)
@option(
    "device",
    metavar="DEVICE",
    default=None,
    help="Where the export is checked: cpu or cuda:N. Default: cpu (TensorRT: cuda:0).",
)
@option("threads", metavar="N", type=int, default=None, help="The frameworks' thread count.")
@option(
    "max_batch",
    metavar="N",
    type=int,
    default=64,
    show_default=True,
    help="TensorRT: the largest batch the engine takes.",
)
@option("name", metavar="NAME", default=None, help="Register the export under this model name.")
@option("no_register", is_flag=True, help="Do not register the export as a model.")
@option("no_store", is_flag=True, help="Do not record the export in the results database.")
@click.option("--json", "as_json", is_flag=True, help="Print the export record as JSON.")
def export_command(
    model: str,
    to: str,
    output: str | None,
    framework: str | None,
    opset: int | None,
    dynamic_batch: bool,
    fp16: bool,
    int8: bool,
    calibration: str | None,
    method: str | None,
    atol: float | None,
    rtol: float | None,
    dataset: str | None,
    batch_size: int,
    runs: int,
    device: str | None,
    threads: int | None,
    max_batch: int,
    name: str | None,
    no_register: bool,
    no_store: bool,
    as_json: bool,
) -> None:
    """Export MODEL (a model name or a manifest .yml) and check the export.

    The export's outputs are compared with the original's on a batch of the
    held-out data (every value within ATOL + RTOL x |original|), and both are
    timed on that batch. A failed check writes nothing. A passing export is
    registered as a model of its own framework (onnxruntime, torchscript,
    tensorrt) under MODEL's name, described in OUTPUT.json and recorded in the
    results database.

    \b
    Examples:
      forgeml export digits_cnn --to onnx -o digits_cnn.onnx
      forgeml export digits_cnn --to torchscript --method script
      forgeml export digits_logreg --to onnx --opset 15 --static-batch --batch-size 8
      forgeml export digits_cnn --to onnx --fp16 --name digits_cnn_fp16
      forgeml export digits_cnn --to tensorrt --fp16 -o digits_cnn.engine
      forgeml export digits_cnn --to tensorrt --int8 --calibration digits:train
    """
    from forgeml.export import export

    result = export(
        model,
        to=to,
        output=output,
        framework=framework,
        opset=opset,
        dynamic_batch=dynamic_batch,
        fp16=fp16,
        int8=int8,
        calibration=calibration,
        method=method,
        atol=atol,
        rtol=rtol,
        dataset=dataset,
        batch_size=batch_size,
        runs=runs,
        device=device,
        threads=threads,
        max_batch=max_batch,
        name=name,
        register=not no_register,
        store=not no_store,
    )
    click.echo(result.to_json() if as_json else result.summary())
