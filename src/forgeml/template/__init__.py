"""Project scaffolding: ``forgeml new NAME`` and ``forgeml new --update``.

``new_project(path, framework=...)`` renders forgeml's copier template (it ships in this
package: :func:`template_path`) into a new folder: configs, a program run by
``forgeml.app.run`` and tracked with ``@track.experiment``, a model and data wired to
``forgeml.data``, tests, a Makefile, a Dockerfile and MLproject, ``.envrc``. Then
``update_project(path)`` applies later template changes with a three-way merge that keeps
your edits. Importing this package imports neither copier nor any ML framework.
"""

from forgeml._core._errors import TemplateError
from forgeml.template._project import (
    ANSWERS_FILE,
    EXTRAS,
    FRAMEWORKS,
    MAX_NAME,
    RECORD_FILE,
    ProjectResult,
    forgeml_requirement,
    new_project,
    package_name,
    template_path,
    update_project,
)

__all__ = [
    "ANSWERS_FILE",
    "EXTRAS",
    "FRAMEWORKS",
    "MAX_NAME",
    "RECORD_FILE",
    "ProjectResult",
    "TemplateError",
    "forgeml_requirement",
    "new_project",
    "package_name",
    "template_path",
    "update_project",
]
