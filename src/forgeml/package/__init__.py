"""Build contexts that serve a model, or run a project: Docker, Apptainer and MLflow.

:func:`package` writes a folder with a multi-stage ``Dockerfile`` (a builder stage
installs pinned wheels into a virtualenv; a slim runtime stage runs ``forgeml serve``
as an unprivileged user, with a health check), ``requirements.txt`` and one
``requirements-<framework>.txt`` per framework with the exact versions of this
environment, forgeml's wheel (installed by path, never by name from an index), the
model (manifest and weights, unless external), an ``MLproject`` and an Apptainer
definition. :func:`project_files` renders the same files for a project (``forgeml new``).
"""

from forgeml._core._errors import PackageError
from forgeml.package._package import (
    FORMATS,
    PackageResult,
    build_forgeml_wheel,
    check_backend_url,
    forgeml_source,
    package,
    select_manifest,
)
from forgeml.package._render import (
    CPU_BASE,
    GPU_BASE,
    GPU_PYTHON,
    base_image,
    base_python,
    image_name,
    project_files,
    running_python,
)
from forgeml.package._requirements import (
    FRAMEWORK_PACKAGES,
    GPU_VARIANTS,
    SERVE_EXTRAS,
    TORCH_CPU_INDEX,
    Pin,
    Requirements,
    closure,
    framework_names,
    requirements,
    wheel_name,
)

__all__ = [
    "CPU_BASE",
    "FORMATS",
    "FRAMEWORK_PACKAGES",
    "GPU_BASE",
    "GPU_PYTHON",
    "GPU_VARIANTS",
    "SERVE_EXTRAS",
    "TORCH_CPU_INDEX",
    "PackageError",
    "PackageResult",
    "Pin",
    "Requirements",
    "base_image",
    "base_python",
    "build_forgeml_wheel",
    "check_backend_url",
    "closure",
    "forgeml_source",
    "framework_names",
    "image_name",
    "package",
    "project_files",
    "requirements",
    "running_python",
    "select_manifest",
    "wheel_name",
]
