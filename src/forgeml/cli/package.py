"""``forgeml package``: write a Docker/Apptainer build context that serves a model.

Every option is also spelled with underscores (``--backend_url``), as in
``forgeml eval`` and ``forgeml export``.
"""

from __future__ import annotations

import click

from forgeml.cli._options import option


@click.command("package")
@click.argument("model")
@click.option(
    "-o",
    "--output",
    "output",
    metavar="DIR",
    required=True,
    type=click.Path(file_okay=False),
    help="The folder to write the build context to (new or empty, unless --force).",
)
@click.option(
    "--embed/--external",
    "embed",
    default=True,
    show_default=True,
    help="Put the model in the image, or write a server that forwards to --backend-url.",
)
@option(
    "backend_url",
    metavar="URL",
    default=None,
    help="--external: the server that runs the model (else FORGEML_SERVE_BACKEND_URL at run time).",
)
@option(
    "format",
    type=click.Choice(["native", "onnx"]),
    default="native",
    show_default=True,
    help="native: the model's own framework. onnx: its ONNX export, served by onnxruntime "
    "alone (no torch or TensorFlow in the image).",
)
@option(
    "framework",
    metavar="NAME",
    default=None,
    help="Which of MODEL's manifests, when it exists for several frameworks.",
)
@option("gpu", is_flag=True, help="A CUDA runtime base image and the GPU builds of frameworks.")
@option(
    "base",
    metavar="IMAGE",
    default=None,
    help="The base image of both stages. Default: python:X.Y-slim-bookworm for --python X.Y "
    "(--gpu: nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04, whose Python is 3.12).",
)
@option(
    "python",
    metavar="X.Y",
    default=None,
    help="The Python version of the default CPU base image. Default: this Python's X.Y, "
    "the one the pins come from; an image of another Python gets a warning (its build "
    "may not find the pinned wheels).",
)
@option("port", metavar="N", type=int, default=8000, show_default=True, help="The server's port.")
@option(
    "forgeml_wheel",
    metavar="PATH",
    default=None,
    type=click.Path(dir_okay=False, exists=True),
    help="The forgeml wheel to put in wheels/. Default: built from forgeml's source tree "
    "(pip wheel --no-deps).",
)
@option(
    "forgeml_source",
    metavar="DIR",
    default=None,
    type=click.Path(file_okay=False, exists=True),
    help="Build the forgeml wheel from this source tree (default: the running forgeml's).",
)
@option(
    "force",
    is_flag=True,
    help="Replace the context in a folder that is not empty: the files its package.json "
    "lists and all of model/ and wheels/ go; other files there are kept.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def package(
    model: str,
    output: str,
    embed: bool,
    backend_url: str | None,
    format: str,
    framework: str | None,
    gpu: bool,
    base: str | None,
    python: str | None,
    port: int,
    forgeml_wheel: str | None,
    forgeml_source: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Write a build context (-o DIR) that serves MODEL (a model name or a manifest .yml).

    \b
    DIR holds:
      Dockerfile                    builder stage installs the pinned wheels into /opt/venv;
                                    slim runtime stage, user forgeml (uid 10001), HEALTHCHECK
                                    on /healthz, CMD forgeml serve /app/model/<name>.yml
      requirements.txt              all that forgeml[serve] needs, exact versions
      requirements-<framework>.txt  the model's framework only, exact versions
      wheels/forgeml-*.whl          forgeml itself: no source needed to build
      model/                        the manifest and its weights (sha256-pinned)
      MLproject, <name>.def         an MLflow project and an Apptainer definition
      package.json                  what was written, with sha256 of every file

    Versions are those of this environment (so the image's Python should be this
    one: a warning says when it is not); forgeml is installed from its wheel by path,
    never by name from an index; torch comes from PyTorch's CPU index unless --gpu.
    The image holds only the model's framework: a scikit-learn model never pulls
    torch, and --format onnx serves a PyTorch or Keras model with onnxruntime alone.

    \b
    Examples:
      forgeml package digits_logreg -o build/logreg
      forgeml package digits_cnn --format onnx -o build/cnn
      forgeml package digits_cnn --framework pytorch --gpu -o build/cnn-gpu
      forgeml package digits_cnn --external --backend-url http://gpu-box:8000 -o build/proxy
      docker build -t digits build/logreg && docker run -p 8000:8000 digits
    """
    import warnings

    from forgeml.package import package as write_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the result holds them: printed below
        result = write_package(
            model,
            output,
            framework=framework,
            format=format,
            external=not embed,
            backend_url=backend_url,
            gpu=gpu,
            base=base,
            python=python,
            port=port,
            forgeml_wheel=forgeml_wheel,
            forgeml_source=forgeml_source,
            force=force,
        )
    click.echo(result.to_json() if as_json else result.summary())
    if as_json:
        for warning in result.warnings:
            click.echo(f"Warning: {warning}", err=True)
