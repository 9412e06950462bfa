package org.edgeexport.demo

import java.io.Closeable

/** Runs one model: inputs and outputs in manifest order. */
interface Runner : Closeable {
    fun run(inputs: List<HostTensor>): List<HostTensor>
}

fun interface RunnerFactory {
    fun open(pkg: ModelPackage, files: PackageFiles): Runner
}

/** The runtimes this app ships, keyed by manifest `runtime.runtime`. */
object Runners {
    private val factories: Map<String, RunnerFactory> = mapOf(
        "executorch" to RunnerFactory { pkg, files -> ExecuTorchRunner(pkg, files) },
        "litert" to RunnerFactory { pkg, files -> LiteRTRunner(pkg, files) },
    )

    val supported: Set<String> get() = factories.keys

    fun open(pkg: ModelPackage, files: PackageFiles): Runner {
        val factory = factories[pkg.runtime]
            ?: throw IllegalArgumentException("no '${pkg.runtime}' runtime in this app (has ${supported.joinToString()})")
        return factory.open(pkg, files)
    }
}
