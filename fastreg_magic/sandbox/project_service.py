"""Admin RPCs for projects and domains, and the default project every sandbox starts with.

As in the Flyte sandbox, project ``flytesnacks`` with domains development, staging and
production exists from the start; other projects can be registered. Registration into an
unknown project or domain is refused with FlyteAdmin's message.
"""

from __future__ import annotations

import grpc
from flyteidl.admin import project_pb2, version_pb2

from fastreg_magic import __version__
from fastreg_magic.sandbox.listing import list_page
from fastreg_magic.sandbox.store import Store
from fastreg_magic.sandbox.validation import DOMAINS, AdminError, invalid, not_found

DEFAULT_PROJECT = "flytesnacks"


class ProjectRpcs:
    """Mixin of the Admin servicer: projects, domains, version."""

    store: Store

    # -- projects --------------------------------------------------------------------------

    def ensure_default_project(self) -> None:
        if self.store.get_project(DEFAULT_PROJECT, project_pb2.Project) is None:
            self.store.put_project(DEFAULT_PROJECT, _project(DEFAULT_PROJECT, DEFAULT_PROJECT, "The default project."))

    def check_project(self, project: str, domain: str) -> None:
        found = self.store.get_project(project, project_pb2.Project)
        if found is None:
            raise invalid(
                f"failed to validate that project [{project}] and domain [{domain}] are registered, "
                f"err: [project [{project}] does not exist; register it or use {DEFAULT_PROJECT}]"
            )
        if found.state == project_pb2.Project.ARCHIVED:
            raise invalid(f"project [{project}] is not active")
        if domain not in DOMAINS:
            raise invalid(f"domain [{domain}] is unrecognized by system; known domains: {', '.join(DOMAINS)}")

    def RegisterProject(self, request, context):
        project = request.project
        if not project.id:
            raise invalid("missing project_id")
        if not project.name:
            raise invalid("missing project_name")
        with self.store.lock:
            if self.store.get_project(project.id, project_pb2.Project) is not None:
                raise AdminError(grpc.StatusCode.ALREADY_EXISTS, f"project [{project.id}] already exists")
            stored = project_pb2.Project()
            stored.CopyFrom(project)
            del stored.domains[:]
            stored.domains.extend(project_pb2.Domain(id=d, name=d) for d in DOMAINS)
            self.store.put_project(project.id, stored)
        return project_pb2.ProjectRegisterResponse()

    def UpdateProject(self, request, context):
        with self.store.lock:
            current = self.store.get_project(request.id, project_pb2.Project)
            if current is None:
                raise not_found(f"project [{request.id}] does not exist")
            if request.name:
                current.name = request.name
            current.description = request.description
            current.labels.CopyFrom(request.labels)
            current.state = request.state
            self.store.put_project(request.id, current)
        return project_pb2.ProjectUpdateResponse()

    def GetProject(self, request, context):
        found = self.store.get_project(request.id, project_pb2.Project)
        if found is None:
            raise not_found(f"project [{request.id}] does not exist")
        return found

    def ListProjects(self, request, context):
        getters = {"name": lambda p: p.name, "id": lambda p: p.id, "identifier": lambda p: p.id,
                   "state": lambda p: p.state, "created_at": lambda p: p.id, "description": lambda p: p.description}
        page, token = list_page(self.store.list_projects(project_pb2.Project), request, getters, default_key="id",
                                descending=False)
        return project_pb2.Projects(projects=page, token=token)

    def GetDomains(self, request, context):
        return project_pb2.GetDomainsResponse(domains=[project_pb2.Domain(id=d, name=d) for d in DOMAINS])

    def GetVersion(self, request, context):
        return version_pb2.GetVersionResponse(
            control_plane_version=version_pb2.Version(Build="fastreg-sandbox", Version=__version__, BuildTime="")
        )


def _project(project_id: str, name: str, description: str) -> project_pb2.Project:
    return project_pb2.Project(id=project_id, name=name, description=description,
                               domains=[project_pb2.Domain(id=d, name=d) for d in DOMAINS])
