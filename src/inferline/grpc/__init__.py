"""The Open Inference Protocol over gRPC: ``GRPCInferenceService`` on grpc.aio.

``open_inference_grpc.proto`` defines the wire protocol; the ``*_pb2*`` modules beside it are
generated from it by grpcio-tools (the command is in the proto's header) and committed.

The generated messages register the protobuf package ``inference``, as Triton's client does
with its own copy, so one process cannot import both: tests talk to the server through the
official clients only.
"""
