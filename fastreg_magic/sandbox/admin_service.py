"""The sandbox's FlyteAdmin: flyteidl's generated ``AdminServiceServicer`` with the RPCs filled in.

The RPCs live in mixins by subject (``project_service``, ``entity_service``,
``execution_service``, ``node_service``, and ``children`` for launch-plan nodes); this class
joins them to the store and the executor and wraps every RPC so that no exception escapes
as UNKNOWN (see ``guard``). RPCs the sandbox does not
serve (matchable attributes, metrics, recovery) answer UNIMPLEMENTED or, for the
attribute lookups flytekit makes on its own, NOT_FOUND as an empty FlyteAdmin does.
"""

from __future__ import annotations

import threading

from flyteidl.service import admin_pb2_grpc

from fastreg_magic.sandbox.children import ChildLaunching
from fastreg_magic.sandbox.entity_service import EntityRpcs
from fastreg_magic.sandbox.execution_service import ExecutionRpcs
from fastreg_magic.sandbox.guard import guarded
from fastreg_magic.sandbox.node_service import NodeRpcs
from fastreg_magic.sandbox.project_service import ProjectRpcs
from fastreg_magic.sandbox.store import Store
from fastreg_magic.sandbox.validation import not_found


@guarded
class AdminService(ProjectRpcs, EntityRpcs, ExecutionRpcs, NodeRpcs, ChildLaunching,
                   admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: Store):
        self.store = store
        self._terminate_timers = []
        self._timers_lock = threading.Lock()
        self.ensure_default_project()

    def GetProjectDomainAttributes(self, request, context):
        raise not_found(f"no attributes are set for {request.project}/{request.domain} in the sandbox")

    def GetWorkflowAttributes(self, request, context):
        raise not_found(f"no attributes are set for workflow {request.workflow} in the sandbox")

    def GetProjectAttributes(self, request, context):
        raise not_found(f"no attributes are set for project {request.project} in the sandbox")
