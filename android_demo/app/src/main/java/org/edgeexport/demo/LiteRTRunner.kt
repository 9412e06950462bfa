package org.edgeexport.demo

import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.tensorflow.lite.Interpreter

/**
 * LiteRT `.tflite` through the Interpreter API (com.google.ai.edge.litert:litert).
 * Tensors are passed as raw bytes in native order, which is little-endian on every
 * Android ABI, i.e. the golden file layout.
 */
class LiteRTRunner(private val pkg: ModelPackage, files: PackageFiles) : Runner {
    private val interpreter = Interpreter(files.mapped(pkg.artifactPath), Interpreter.Options().setNumThreads(2))

    override fun run(inputs: List<HostTensor>): List<HostTensor> {
        inputs.forEachIndexed { i, t ->
            val shape = IntArray(t.shape.size) { t.shape[it].toInt() }
            if (!interpreter.getInputTensor(i).shape().contentEquals(shape)) interpreter.resizeInput(i, shape)
        }
        interpreter.allocateTensors()
        val feeds = inputs.map { direct(it.bytes.size).put(it.bytes).rewind() }
        val results = pkg.outputs.indices.associateWith { direct(interpreter.getOutputTensor(it).numBytes()) }
        interpreter.runForMultipleInputsOutputs(feeds.toTypedArray(), results)
        return pkg.outputs.mapIndexed { i, spec ->
            val buffer = results.getValue(i).apply { rewind() }
            val bytes = ByteArray(buffer.remaining()).also { buffer.get(it) }
            HostTensor(spec.name, spec.dtype, interpreter.getOutputTensor(i).shape().map { it.toLong() }.toLongArray(), bytes)
        }
    }

    override fun close() = interpreter.close()

    private fun direct(size: Int): ByteBuffer = ByteBuffer.allocateDirect(size).order(ByteOrder.nativeOrder())
}
