package org.edgeexport.demo

import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/** ExecuTorch (XNNPACK) `.pte` through org.pytorch:executorch-android's Module. */
class ExecuTorchRunner(private val pkg: ModelPackage, files: PackageFiles) : Runner {
    // Module.load needs a file path; assets live inside the APK, so copy once per artifact hash.
    private val module: Module = Module.load(files.localFile(pkg.artifactPath, pkg.artifactSha256).absolutePath)

    override fun run(inputs: List<HostTensor>): List<HostTensor> {
        val results = module.forward(*inputs.map { EValue.from(toTensor(it)) }.toTypedArray())
        require(results.size >= pkg.outputs.size) {
            "model returned ${results.size} values, manifest lists ${pkg.outputs.size} outputs"
        }
        return pkg.outputs.mapIndexed { i, spec -> fromTensor(spec, results[i].toTensor()) }
    }

    override fun close() = module.destroy()

    private fun toTensor(t: HostTensor): Tensor = when (t.dtype) {
        DType.FLOAT32 -> Tensor.fromBlob(t.floats(), t.shape)
        DType.FLOAT16 -> Tensor.fromBlob(t.halves(), t.shape)
        DType.INT64 -> Tensor.fromBlob(t.longs(), t.shape)
        DType.INT32 -> Tensor.fromBlob(t.ints(), t.shape)
        DType.INT8 -> Tensor.fromBlob(t.bytes, t.shape)
        DType.UINT8 -> Tensor.fromBlobUnsigned(t.bytes, t.shape)
        DType.BOOL -> throw IllegalArgumentException("${t.name}: bool inputs are not supported by this runner")
    }

    private fun fromTensor(spec: TensorSpec, t: Tensor): HostTensor {
        val shape = t.shape()
        return when (spec.dtype) {
            DType.FLOAT32 -> HostTensor.ofFloats(spec.name, shape, t.dataAsFloatArray)
            DType.FLOAT16 -> HostTensor.ofHalves(spec.name, shape, t.dataAsShortArray)
            DType.INT64 -> HostTensor.ofLongs(spec.name, shape, t.dataAsLongArray)
            DType.INT32 -> HostTensor.ofInts(spec.name, shape, t.dataAsIntArray)
            DType.INT8 -> HostTensor(spec.name, spec.dtype, shape, t.dataAsByteArray)
            DType.UINT8 -> HostTensor(spec.name, spec.dtype, shape, t.dataAsUnsignedByteArray)
            DType.BOOL -> throw IllegalArgumentException("${spec.name}: bool outputs are not supported by this runner")
        }
    }
}
