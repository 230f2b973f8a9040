//! The scene a 集句 poem keeps to: one season and one time of day at most.
//! Lines of different poems readily contradict each other (春风 then 西风, a
//! dawn line beside a night line); the lexicon `data/scenes.txt` names the
//! words that place a line, and a poem's lines together may name one of each.

use std::sync::OnceLock;

const LEXICON: &str = include_str!("../data/scenes.txt");

/// The seasons and times of day a line names, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Scene {
    seasons: u8,
    times: u8,
}

impl Scene {
    /// The scene of a poem with both lines: `None` when it would name two
    /// seasons or two times of day.
    pub(crate) fn join(self, other: Scene) -> Option<Scene> {
        let joined = Scene {
            seasons: self.seasons | other.seasons,
            times: self.times | other.times,
        };
        (joined.seasons.count_ones() <= 1 && joined.times.count_ones() <= 1).then_some(joined)
    }
}

struct Lexicon {
    /// (is a season, bit, word).
    words: Vec<(bool, u8, Vec<char>)>,
}

fn lexicon() -> &'static Lexicon {
    static CELL: OnceLock<Lexicon> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut words = Vec::new();
        let (mut seasons, mut times) = (0u8, 0u8);
        for row in LEXICON.lines() {
            let mut fields = row.split_whitespace();
            let (Some(kind), Some(_name)) = (fields.next(), fields.next()) else {
                continue;
            };
            let (season, bit) = match kind {
                "season" => (true, &mut seasons),
                "time" => (false, &mut times),
                _ => continue,
            };
            for word in fields {
                words.push((season, *bit, word.chars().collect()));
            }
            *bit += 1;
        }
        Lexicon { words }
    })
}

/// The scene a line names.
pub(crate) fn scene_of(line: &[char]) -> Scene {
    let mut scene = Scene::default();
    for (season, bit, word) in &lexicon().words {
        if line.windows(word.len()).any(|w| w == word.as_slice()) {
            if *season {
                scene.seasons |= 1 << bit;
            } else {
                scene.times |= 1 << bit;
            }
        }
    }
    scene
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(line: &str) -> Scene {
        scene_of(&line.chars().collect::<Vec<_>>())
    }

    #[test]
    fn one_season_and_one_time_of_day() {
        let spring = of("春风又绿江南岸");
        let autumn = of("西风吹老洞庭波");
        assert_ne!(spring, Scene::default());
        assert!(spring.join(autumn).is_none());
        assert!(spring.join(of("桃花依旧笑春风")).is_some());
        // A line that names no scene goes with any.
        assert_eq!(spring.join(of("明月松间照")), Some(spring));
        assert!(of("夕阳无限好").join(of("晓看红湿处")).is_none());
        assert!(of("春宵一刻值千金").join(of("秋夜凉风起")).is_none());
    }
}
