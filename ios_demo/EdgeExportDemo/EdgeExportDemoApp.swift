import SwiftUI

@main
struct EdgeExportDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
