"""`python fsdp_on_cpu.py ARGS` runs `rcc ARGS` with accelerate's FSDP on CPU processes (test scaffolding).

accelerate shards with FSDP only on accelerators: on a CPU it sets the launched processes up over gloo as MULTI_CPU
and ignores the launch config's FSDP. Once it has, this switches the state to FSDP with the plugin the launch config
describes, so `rcc train` takes the path it takes on GPUs (`fully_shard` of the base's blocks, the gathered
checkpoint, the scattered optimizer moments) on this machine's CPU; torch's FSDP2 runs there over gloo.
"""

import sys

import accelerate
from accelerate import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin


class FSDPOnCPU(accelerate.Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables the launch set
        self.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP


if __name__ == "__main__":
    accelerate.Accelerator = FSDPOnCPU  # `rcc train` imports it when it starts
    from rcc_model.cli import main

    sys.exit(main(sys.argv[1:]))
