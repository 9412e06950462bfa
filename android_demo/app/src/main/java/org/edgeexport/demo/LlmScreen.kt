package org.edgeexport.demo

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.safeDrawingPadding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp

@Composable
fun LlmScreen(vm: LlmViewModel) {
    var prompt by remember { mutableStateOf("The for statement is used to") }
    Column(
        Modifier.fillMaxSize().safeDrawingPadding().verticalScroll(rememberScrollState()).padding(16.dp),
        verticalArrangement = Arrangement.spacedBy(12.dp),
    ) {
        Text("Text generation", style = MaterialTheme.typography.headlineSmall)
        for (pkg in vm.packages) {
            ChoiceRow("${pkg.name} (${pkg.recipe})", pkg == vm.selected, !vm.busy) { vm.select(pkg) }
        }
        OutlinedTextField(value = prompt, onValueChange = { prompt = it }, label = { Text("Prompt") },
            modifier = Modifier.fillMaxWidth())
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button(onClick = { vm.generate(prompt, 64) }, enabled = !vm.busy && vm.selected != null) { Text("Generate") }
            OutlinedButton(onClick = vm::runSelfTest, enabled = !vm.busy && vm.selected != null) { Text("Self-test") }
        }
        Text(vm.output, style = MaterialTheme.typography.bodyLarge)
        Text(vm.stats, style = MaterialTheme.typography.bodySmall)
        vm.selfTest?.let { Text(it, style = MaterialTheme.typography.titleMedium) }
        Text(vm.status, style = MaterialTheme.typography.bodySmall)
    }
}
