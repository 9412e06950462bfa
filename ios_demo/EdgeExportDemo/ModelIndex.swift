import Foundation

/// One entry of Models/index.json, written by `edge-export bundle --app ios`.
struct IndexEntry: Decodable, Hashable, Identifiable {
    let name: String
    let version: String
    let target: String
    let recipe: String
    let path: String
    let runtime: String

    var id: String { path }
    var title: String { "\(name) \(version) · \(target)-\(recipe)" }

    enum CodingKeys: String, CodingKey {
        case name, version, target, recipe, path, runtime
    }
}

enum ModelIndex {
    struct File: Decodable {
        let models: [IndexEntry]

        enum CodingKeys: String, CodingKey {
            case models
        }
    }

    /// The Models folder reference inside the app bundle.
    static var root: URL? { Bundle.main.url(forResource: "Models", withExtension: nil) }

    static func load() throws -> [IndexEntry] {
        guard let url = root?.appendingPathComponent("index.json"),
              FileManager.default.fileExists(atPath: url.path) else { return [] }
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url)).models
    }
}
